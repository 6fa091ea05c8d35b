import type {
  ChannelOptions,
  Channel,
  Client,
  CompatServiceDefinition,
  TsProtoServiceDefinition,
} from 'nice-grpc';
import { createChannel, createClientFactory } from 'nice-grpc';
import type { DeadlineOptions } from 'nice-grpc-client-middleware-deadline';
import { deadlineMiddleware } from 'nice-grpc-client-middleware-deadline';
import type { RetryOptions } from 'nice-grpc-client-middleware-retry';
import { retryMiddleware } from 'nice-grpc-client-middleware-retry';
import { Status } from 'nice-grpc-common';
import { errorDetailsClientMiddleware } from 'nice-grpc-error-details';
import { tracingClientMiddleware } from './grpc-tracing';
import { withWireCodecs } from './message-codecs';
import type { TlsSettings } from './transport-security';
import { channelCredentials } from './transport-security';

/** A channel's settings; a service hands its own config, whose TLS fields secure the channel. */
export interface ChannelSettings extends TlsSettings {
  readonly keepaliveTime?: number;
  readonly keepaliveTimeout?: number;
  readonly maxMessageSize?: number;
}

export function clientChannelOptions(settings: ChannelSettings = {}): ChannelOptions {
  return {
    'grpc.keepalive_time_ms': settings.keepaliveTime ?? 10_000,
    'grpc.keepalive_timeout_ms': settings.keepaliveTimeout ?? 5_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_receive_message_length': settings.maxMessageSize ?? 4 * 1024 * 1024,
    'grpc.max_send_message_length': settings.maxMessageSize ?? 4 * 1024 * 1024,
    // A restarted peer is found again quickly; dsat reconnects on its own with capped backoff.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 5_000,
    // A batch of assignments or outcomes is often over 64 KiB; the default HTTP/2 window would
    // make each such message wait for a WINDOW_UPDATE round trip.
    'grpc-node.flow_control_window': 4 * 1024 * 1024,
  };
}

export function createDsatChannel(address: string, settings: ChannelSettings = {}): Channel {
  return createChannel(address, channelCredentials(settings), clientChannelOptions(settings));
}

export type DsatClient<D extends CompatServiceDefinition> = Client<
  D,
  DeadlineOptions & RetryOptions
>;

export interface ClientSettings {
  /** Deadline of every unary call unless the call sets its own, in ms. Default 10 s. */
  readonly deadline?: number;
  /** Attempts of methods marked idempotent in the proto. Default 4. */
  readonly retryMaxAttempts?: number;
}

/**
 * A client with a span per unary call, a default deadline, error details, and retries for methods the proto marks
 * `IDEMPOTENT` or `NO_SIDE_EFFECTS` only (the retry middleware reads `idempotency_level`).
 */
export function createDsatClient<D extends TsProtoServiceDefinition>(
  definition: D,
  channel: Channel,
  settings: ClientSettings = {},
): DsatClient<D> {
  return createClientFactory()
    .use(tracingClientMiddleware)
    .use(errorDetailsClientMiddleware)
    .use(retryMiddleware)
    .use(deadlineMiddleware)
    .create(
      withWireCodecs(definition),
      channel,
      defaultCallOptions(definition, settings),
    ) as DsatClient<D>;
}

/** A deadline on every unary method only: a default deadline would end long-lived streams. */
function defaultCallOptions(definition: CompatServiceDefinition, settings: ClientSettings) {
  const options: Record<string, DeadlineOptions & RetryOptions> = {
    '*': {
      retryMaxAttempts: settings.retryMaxAttempts ?? 4,
      retryBaseDelayMs: 100,
      retryMaxDelayMs: 2_000,
      // Only a peer that is not there is worth another try; INTERNAL would repeat a bug.
      retryableStatuses: [Status.UNAVAILABLE],
    },
  };
  const methods = ('methods' in definition ? definition.methods : definition) as Record<
    string,
    { requestStream: boolean; responseStream: boolean }
  >;
  for (const [name, m] of Object.entries(methods)) {
    if (!m.requestStream && !m.responseStream)
      options[name] = { deadline: settings.deadline ?? 10_000 };
  }
  return options;
}
