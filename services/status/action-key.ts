import { invalidArgument } from '../shared/errors';

/**
 * DigitalPy action keys, `Sender?Context@Decorator?Action`, read in dsat as
 * `client?pipeline@decorator?stage`.
 *
 * Precedence, from the loosest binding to the tightest:
 *   1. `?` splits first: a key has exactly two `?`, giving client, `pipeline@decorator`, stage
 *      (so `a?b@c?d` is client a, pipeline b, decorator c, stage d, as in DigitalPy's flows).
 *   2. `@` splits the middle part once: pipeline, then decorator. No `@` means any decorator.
 *   3. `*` inside a part matches any run of characters; an empty part means `*` (DigitalPy's
 *      `??done` = any sender, any context). A key that is just `*` (or empty) matches everything.
 * Decorators are PUBLISH, ASYNC or NONE (a stage without decorators), case-insensitive; a stage
 * with several decorators matches if any of them does. Names are case-sensitive.
 * A task's client is not recorded by dsat yet, so the event's client is unknown: only a client
 * part that matches everything (`*` or empty) accepts it; a named client never leaks others' events.
 * In a TaskFilter the other fields are checked first and the key last; all must match.
 */
export interface ActionKeyPattern {
  readonly text: string;
  readonly client: PartMatcher;
  readonly pipeline: PartMatcher;
  readonly decorator: PartMatcher;
  readonly stage: PartMatcher;
}

/** What an event or task offers to a pattern. */
export interface ActionKeySubject {
  /** The submitting client, undefined when unknown. */
  readonly client: string | undefined;
  readonly pipeline: string;
  /** Upper-case decorator names of the stage; empty for a stage without decorators. */
  readonly decorators: readonly string[];
  readonly stage: string;
}

interface PartMatcher {
  readonly any: boolean;
  test(value: string): boolean;
}

const FIELD = 'filter.action_key';
/** Room for any client, pipeline, decorator and stage names with wildcards between them. */
export const MAX_ACTION_KEY_LENGTH = 256;
const ANY: PartMatcher = { any: true, test: () => true };
const DECORATORS = new Set(['PUBLISH', 'ASYNC', 'NONE']);

export function parseActionKey(text: string): ActionKeyPattern {
  if (text.length > MAX_ACTION_KEY_LENGTH) {
    throw invalidArgument(
      FIELD,
      `is ${text.length} characters, more than ${MAX_ACTION_KEY_LENGTH}`,
      'ACTION_KEY_TOO_LONG',
    );
  }
  if (text === '' || text === '*') {
    return { text, client: ANY, pipeline: ANY, decorator: ANY, stage: ANY };
  }
  const parts = text.split('?');
  if (parts.length !== 3) {
    throw invalidArgument(FIELD, `"${text}" must have the form client?pipeline@decorator?stage`);
  }
  const [client = '', middle = '', stage = ''] = parts;
  if (client.includes('@') || stage.includes('@')) {
    throw invalidArgument(
      FIELD,
      `"${text}": "@" may only separate the pipeline from the decorator`,
    );
  }
  const at = middle.indexOf('@');
  const pipeline = at < 0 ? middle : middle.slice(0, at);
  const decorator = at < 0 ? '*' : middle.slice(at + 1).toUpperCase();
  if (decorator.includes('@')) throw invalidArgument(FIELD, `"${text}" has more than one "@"`);
  if (!decorator.includes('*') && decorator !== '' && !DECORATORS.has(decorator)) {
    throw invalidArgument(FIELD, `"${text}": decorator must be PUBLISH, ASYNC, NONE or a wildcard`);
  }
  return {
    text,
    client: part(client),
    pipeline: part(pipeline),
    decorator: part(decorator),
    stage: part(stage),
  };
}

export function matchesActionKey(pattern: ActionKeyPattern, subject: ActionKeySubject): boolean {
  if (subject.client === undefined ? !pattern.client.any : !pattern.client.test(subject.client)) {
    return false;
  }
  if (!pattern.pipeline.test(subject.pipeline) || !pattern.stage.test(subject.stage)) return false;
  if (pattern.decorator.any) return true;
  if (subject.decorators.length === 0) return pattern.decorator.test('NONE');
  return subject.decorators.some((d) => pattern.decorator.test(d));
}

/** The subject's own key, `*` standing for an unknown client. */
export function formatActionKey(subject: ActionKeySubject): string {
  const decorator = subject.decorators.length === 0 ? 'NONE' : subject.decorators.join('+');
  return `${subject.client ?? '*'}?${subject.pipeline}@${decorator}?${subject.stage}`;
}

function part(glob: string): PartMatcher {
  if (glob === '' || /^\*+$/.test(glob)) return ANY;
  return { any: false, test: globMatcher(glob) };
}

/**
 * A glob whose only wildcard is `*`, matched without backtracking: the literal pieces between the
 * stars are each found at their first place after the one before (for `*` alone the leftmost
 * place is always a safe choice), so a match costs at most value × glob steps. A RegExp of `.*`s
 * backtracks instead, and `*a*a*a*a*b` against a long name of a's blocked the event loop.
 */
export function globMatcher(glob: string): (value: string) => boolean {
  const pieces = glob.split('*');
  if (pieces.length === 1) return (value) => value === glob;
  const head = pieces[0] as string;
  const tail = pieces[pieces.length - 1] as string;
  const middle = pieces.slice(1, -1).filter((p) => p !== '');
  return (value) => {
    const end = value.length - tail.length;
    if (end < head.length || !value.startsWith(head) || !value.endsWith(tail)) return false;
    let at = head.length;
    for (const piece of middle) {
      const found = value.indexOf(piece, at);
      if (found < 0 || found + piece.length > end) return false;
      at = found + piece.length;
    }
    return true;
  };
}
