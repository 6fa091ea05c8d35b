import { Status } from 'nice-grpc-common';

/** The gRPC status names a domain error can map to. */
export type ErrorKind =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'OUT_OF_RANGE'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'UNAVAILABLE'
  | 'ABORTED'
  | 'DEADLINE_EXCEEDED'
  | 'CANCELLED'
  | 'INTERNAL';

export interface DsatErrorOptions {
  /** Key/value facts for the ErrorInfo detail, e.g. `{ field: 'pipeline' }`. */
  metadata?: Record<string, string>;
  /** The field that is wrong, reported as a BadRequest field violation. */
  field?: string;
  /** Every bad field when there are several; `field` defaults to the first. */
  violations?: readonly FieldViolation[];
  cause?: unknown;
}

/** One bad field of a request: its path (`pipeline.stages[2].next[0]`) and what is wrong. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/**
 * The one error type of dsat's domain code. `reason` is UPPER_SNAKE_CASE and stable, so callers in
 * any language can branch on it (it travels as `google.rpc.ErrorInfo.reason`).
 */
export class DsatError extends Error {
  readonly kind: ErrorKind;
  readonly reason: string;
  readonly metadata: Record<string, string>;
  readonly field: string | undefined;
  readonly violations: readonly FieldViolation[];

  constructor(kind: ErrorKind, reason: string, message: string, options: DsatErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DsatError';
    this.kind = kind;
    this.reason = reason;
    this.field = options.field ?? options.violations?.[0]?.field;
    this.violations =
      options.violations ??
      (this.field === undefined ? [] : [{ field: this.field, description: message }]);
    this.metadata = { ...(options.metadata ?? {}) };
    if (this.field !== undefined) this.metadata.field = this.field;
  }

  get status(): Status {
    return Status[this.kind];
  }
}

/** An INVALID_ARGUMENT error that names the bad field. */
export function invalidArgument(field: string, message: string, reason = 'INVALID_FIELD') {
  return new DsatError('INVALID_ARGUMENT', reason, `${field}: ${message}`, { field });
}

/** Violations an error lists at most: a huge request's thousands would not fit its trailers. */
const MAX_LISTED = 50;

/** One INVALID_ARGUMENT error listing every violation (the first 50), each with its field. */
export function invalidArguments(violations: readonly FieldViolation[], reason = 'INVALID_FIELDS') {
  const listed = violations.length > MAX_LISTED ? violations.slice(0, MAX_LISTED) : violations;
  const lines = listed.map((v) => `${v.field}: ${v.description}`);
  const count =
    listed.length < violations.length
      ? `${violations.length} problems, the first ${listed.length}`
      : `${lines.length} problems`;
  const message = violations.length === 1 ? String(lines[0]) : `${count}:\n  ${lines.join('\n  ')}`;
  return new DsatError('INVALID_ARGUMENT', reason, message, { violations: listed });
}

export function notFound(what: string, id: string, field?: string) {
  const reason = `${what.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}_NOT_FOUND`;
  return new DsatError('NOT_FOUND', reason, `${what} ${JSON.stringify(id)} not found`, {
    ...(field === undefined ? {} : { field }),
    metadata: { id },
  });
}

export function failedPrecondition(
  reason: string,
  message: string,
  metadata?: Record<string, string>,
) {
  return new DsatError('FAILED_PRECONDITION', reason, message, metadata ? { metadata } : {});
}

export function isDsatError(err: unknown): err is DsatError {
  return err instanceof DsatError;
}
