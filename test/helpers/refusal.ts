import { BadRequest, RichClientError } from 'nice-grpc-error-details';

/** The error a call ends with; fails the test when the call succeeds. */
export async function refusal(call: Promise<unknown>): Promise<RichClientError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (err === undefined) throw new Error('the call was accepted');
  expect(err).toBeInstanceOf(RichClientError);
  return err as RichClientError;
}

/** The fields a refusal's BadRequest detail names, in order. */
export function violatedFields(err: RichClientError): string[] {
  const bad = err.extra.find((d) => d.$type === BadRequest.$type) as BadRequest | undefined;
  return bad?.fieldViolations.map((v) => v.field) ?? [];
}
