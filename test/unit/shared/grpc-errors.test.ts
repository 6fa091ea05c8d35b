import { ClientError, ServerError, Status } from 'nice-grpc-common';
import { BadRequest, ErrorInfo, RichClientError, RichServerError } from 'nice-grpc-error-details';
import { DsatError, invalidArgument, invalidArguments } from '../../../services/shared/errors';
import { cutUtf8, toServerError } from '../../../services/shared/grpc-errors';

const PATH = '/dsat.status.v1.StatusService/ListTasks';

describe('toServerError', () => {
  it.each([
    Status.INVALID_ARGUMENT,
    Status.NOT_FOUND,
    Status.ALREADY_EXISTS,
    Status.FAILED_PRECONDITION,
    Status.OUT_OF_RANGE,
  ])("passes on a downstream refusal of the caller's input (%i) as it came", (code) => {
    const info = ErrorInfo.fromPartial({ reason: 'INVALID_FIELD', domain: 'dsat' });
    const err = toServerError(new RichClientError(PATH, code, 'filter.action_key: bad', [info]));
    expect(err).toBeInstanceOf(RichServerError);
    expect(err).toMatchObject({ code, details: 'filter.action_key: bad', extra: [info] });
    expect(toServerError(new ClientError(PATH, code, 'plain'))).toMatchObject({
      code,
      details: 'plain',
    });
  });

  it.each([Status.UNAVAILABLE, Status.INTERNAL, Status.DEADLINE_EXCEEDED, Status.UNKNOWN])(
    "leaves a downstream failure that is not the caller's (%i) to become INTERNAL",
    (code) => {
      expect(toServerError(new ClientError(PATH, code, 'down'))).toBeUndefined();
    },
  );

  it('keeps a domain error within what trailers can carry', () => {
    const huge = invalidArgument('filter.action_key', `"${'k'.repeat(1_000_000)}" is bad`);
    const small = toServerError(huge) as RichServerError;
    expect(small.code).toBe(Status.INVALID_ARGUMENT);
    expect(Buffer.byteLength(small.details)).toBeLessThanOrEqual(8 * 1024);
    expect(small.details.endsWith('…')).toBe(true);
    const many = invalidArguments(
      Array.from({ length: 5_000 }, (_, i) => ({
        field: `pipeline.stages[${i}].name`,
        description: 'd'.repeat(2_000),
      })),
    );
    const listed = toServerError(many) as RichServerError;
    const bad = listed.extra.find((d) => d.$type === BadRequest.$type) as BadRequest;
    const bytes = bad.fieldViolations.reduce(
      (n, v) => n + v.field.length + v.description.length,
      0,
    );
    expect(bytes).toBeLessThanOrEqual(16 * 1024);
    expect(bad.fieldViolations[0]?.field).toBe('pipeline.stages[0].name');
  });

  it('maps a DsatError to its status and leaves a ServerError alone', () => {
    const e = new DsatError('FAILED_PRECONDITION', 'TASK_FINISHED', 'done', { field: 'task_id' });
    expect(toServerError(e)).toMatchObject({ code: Status.FAILED_PRECONDITION, details: 'done' });
    const s = new ServerError(Status.ABORTED, 'x');
    expect(toServerError(s)).toBe(s);
    expect(toServerError(new Error('bug'))).toBeUndefined();
  });
});

describe('cutUtf8', () => {
  it('cuts on a character boundary, within the bytes, marking the cut', () => {
    expect(cutUtf8('short', 10)).toBe('short');
    const cut = cutUtf8('€'.repeat(100), 50);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(50);
    expect(cut).toBe(`${'€'.repeat(15)}…`);
  });
});
