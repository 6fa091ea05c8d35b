import { describe, expect, it } from '@jest/globals';
import {
  MAX_ACTION_KEY_LENGTH,
  formatActionKey,
  globMatcher,
  matchesActionKey,
  parseActionKey,
  type ActionKeySubject,
} from '../../../services/status/action-key';

const resize: ActionKeySubject = {
  client: undefined,
  pipeline: 'images',
  decorators: [],
  stage: 'resize',
};
const publish: ActionKeySubject = {
  client: undefined,
  pipeline: 'images',
  decorators: ['PUBLISH'],
  stage: 'notify',
};
const fromAlice: ActionKeySubject = {
  client: 'alice',
  pipeline: 'images',
  decorators: ['ASYNC'],
  stage: 'approve',
};

function matches(key: string, subject: ActionKeySubject): boolean {
  return matchesActionKey(parseActionKey(key), subject);
}

describe('action keys', () => {
  it.each([
    ['*', resize, true],
    ['', publish, true],
    ['*?images@*?resize', resize, true],
    ['*?images?resize', resize, true], // no @: any decorator
    ['??resize', resize, true], // empty parts are wildcards, as in DigitalPy's ??done
    ['*?images@NONE?resize', resize, true],
    ['*?images@none?resize', resize, true], // decorators are case-insensitive
    ['*?images@PUBLISH?resize', resize, false],
    ['*?images@PUBLISH?*', publish, true],
    ['*?images@ASYNC?*', publish, false],
    ['*?ima*@*?*', resize, true],
    ['*?img*@*?*', resize, false],
    ['*?*?re*ze', resize, true],
    ['*?*?re*zed', resize, false],
    ['*?Images?resize', resize, false], // names are case-sensitive
    ['alice?images?*', resize, false], // an unknown client never matches a named one
    ['a*?images?*', resize, false],
    ['alice?images@ASYNC?approve', fromAlice, true],
    ['bob?images?approve', fromAlice, false],
    ['?images.v2?resize', { ...resize, pipeline: 'images.v2' }, true], // "." is literal
    ['?images.v2?resize', { ...resize, pipeline: 'imagesXv2' }, false],
  ] as const)('%s against %j → %s', (key, subject, expected) => {
    expect(matches(key, subject)).toBe(expected);
  });

  it('binds ? before @: a?b@c?d is client a, pipeline b, decorator c, stage d', () => {
    const p = parseActionKey('a?b@PUBLISH?d');
    expect(p.client.test('a')).toBe(true);
    expect(p.pipeline.test('b')).toBe(true);
    expect(p.pipeline.test('b@PUBLISH')).toBe(false);
    expect(p.decorator.test('PUBLISH')).toBe(true);
    expect(p.stage.test('d')).toBe(true);
  });

  it.each([
    ['images', 'form'],
    ['a?b', 'form'],
    ['a?b?c?d', 'form'],
    ['a@x?b?c', '"@"'],
    ['a?b?c@x', '"@"'],
    ['a?b@X?c', 'decorator'],
    ['a?b@P@Q?c', 'more than one'],
  ])('refuses %s naming filter.action_key', (key, message) => {
    expect(() => parseActionKey(key)).toThrow(
      expect.objectContaining({ field: 'filter.action_key' }),
    );
    expect(() => parseActionKey(key)).toThrow(new RegExp(message));
  });

  it('formats an event key with * for an unknown client', () => {
    expect(formatActionKey(publish)).toBe('*?images@PUBLISH?notify');
    expect(formatActionKey(resize)).toBe('*?images@NONE?resize');
    expect(formatActionKey(fromAlice)).toBe('alice?images@ASYNC?approve');
  });

  it('refuses a key longer than the cap naming filter.action_key', () => {
    expect(() => parseActionKey(`*?${'a'.repeat(MAX_ACTION_KEY_LENGTH)}?*`)).toThrow(
      expect.objectContaining({ field: 'filter.action_key', reason: 'ACTION_KEY_TOO_LONG' }),
    );
    expect(() => parseActionKey(`*?${'a'.repeat(MAX_ACTION_KEY_LENGTH - 4)}?*`)).not.toThrow();
  });

  it('matches a pathological key against a long name without backtracking', () => {
    const longName = { ...resize, pipeline: 'a'.repeat(63) };
    /** How many of `count` matches finish within a second. */
    const within1s = (key: string, count: number): number => {
      const pattern = parseActionKey(key);
      const started = Date.now();
      let done = 0;
      while (done < count && Date.now() - started < 1_000) {
        expect(matchesActionKey(pattern, longName)).toBe(false);
        done++;
      }
      return done;
    };
    // A backtracking RegExp took ~0.6 s a match on this key, ~10x more for each further `a*`
    // (checked first: with such a matcher the next key would never finish).
    expect(within1s('*?*a*a*a*a*a*b?*', 10_000)).toBe(10_000);
    expect(within1s(`*?${'*a'.repeat(60)}*b?*`, 1_000)).toBe(1_000);
    expect(matches(`*?${'*a'.repeat(60)}*?*`, longName)).toBe(true);
  });
});

describe('globMatcher', () => {
  it.each([
    ['abc', 'abc', true],
    ['abc', 'abcd', false],
    ['a*', 'a', true],
    ['*a', 'ba', true],
    ['a*a', 'a', false], // the head and the tail may not share the one a
    ['a*a', 'aa', true],
    ['a*b*a', 'aba', true],
    ['a*b*a', 'aab', false],
    ['*ab*ab*', 'xabyab', true],
    ['*ab*ab*', 'xaab', false],
    ['*aa*', 'aa', true],
    ['**a**', 'a', true],
    ['*.*', 'x.y', true],
    ['*.*', 'xy', false], // "." is literal
    ['a*', 'a\nb', true], // * crosses any character
    ['*b', 'abab', true],
  ])('%s against %s → %s', (glob, value, expected) => {
    expect(globMatcher(glob)(value)).toBe(expected);
  });

  it('agrees with a RegExp of the same glob on random short inputs', () => {
    let seed = 7;
    const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    const word = (alphabet: string, max: number): string =>
      Array.from({ length: rand(max) }, () => alphabet[rand(alphabet.length)]).join('');
    for (let i = 0; i < 5_000; i++) {
      const glob = word('ab*', 7);
      const value = word('ab', 8);
      const re = new RegExp(`^${glob.split('*').join('.*')}$`, 's');
      expect([glob, value, globMatcher(glob)(value)]).toEqual([glob, value, re.test(value)]);
    }
  });
});
