import type { ServiceImplementation, TsProtoServiceDefinition } from 'nice-grpc';
import { ServerError, Status } from 'nice-grpc-common';
import type { TerminatorContext } from './terminator';

type Impl<D extends TsProtoServiceDefinition> = ServiceImplementation<D, TerminatorContext>;

/**
 * Completes a partial implementation: every method it lacks answers UNIMPLEMENTED with the
 * method's full name, for the methods a later piece of work fills in.
 */
export function withUnimplemented<D extends TsProtoServiceDefinition>(
  definition: D,
  partial: Partial<Impl<D>>,
): Impl<D> {
  const impl: Record<string, unknown> = { ...partial };
  for (const [key, method] of Object.entries(definition.methods)) {
    if (impl[key] !== undefined) continue;
    const error = () =>
      new ServerError(
        Status.UNIMPLEMENTED,
        `${definition.fullName}/${method.name} is not implemented`,
      );
    impl[key] = method.responseStream
      ? // eslint-disable-next-line require-yield
        async function* () {
          throw error();
        }
      : () => Promise.reject(error());
  }
  return impl as Impl<D>;
}
