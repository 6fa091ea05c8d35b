import { HealthDefinition } from 'nice-grpc-server-health';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../../../gen/dsat/status/v1/status';
import { TrackerServiceDefinition } from '../../../gen/dsat/tracker/v1/tracker';
import { isTracedCall } from '../../../services/shared/grpc-tracing';

interface Definition {
  fullName: string;
  methods: Record<string, { name: string; requestStream: boolean; responseStream: boolean }>;
}

/** A call as nice-grpc's middleware sees it: the method path is /<service>/<Method>. */
function call(definition: Definition, key: string) {
  const m = definition.methods[key]!;
  return {
    method: { path: `/${definition.fullName}/${m.name}` },
    requestStream: m.requestStream,
    responseStream: m.responseStream,
  };
}

describe('which gRPC calls get a span', () => {
  it('traces unary calls made for a user', () => {
    expect(isTracedCall(call(RouterServiceDefinition, 'submitTask'))).toBe(true);
    expect(isTracedCall(call(StatusServiceDefinition, 'getTask'))).toBe(true);
    expect(isTracedCall(call(TrackerServiceDefinition, 'join'))).toBe(true);
  });

  it('leaves out the long-lived streams and the calls made on a timer', () => {
    expect(isTracedCall(call(RouterServiceDefinition, 'connectWorker'))).toBe(false);
    expect(isTracedCall(call(StatusServiceDefinition, 'applyTransitions'))).toBe(false);
    expect(isTracedCall(call(StatusServiceDefinition, 'watchEvents'))).toBe(false);
    expect(isTracedCall(call(TrackerServiceDefinition, 'heartbeat'))).toBe(false);
    expect(isTracedCall(call(HealthDefinition, 'check'))).toBe(false);
  });
});
