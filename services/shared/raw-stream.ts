import * as grpc from '@grpc/grpc-js';
import {
  decodeMessage,
  encodeMessage,
  type MessageDecoder,
  type MessageEncoder,
} from './message-codecs';

/** What ts-proto generates for a message: enough to (de)serialize it. */
export interface MessageCodec<T> extends MessageEncoder<T>, MessageDecoder<T> {}

/** A method of a generated service definition. */
export interface StreamMethod<Req, Res> {
  readonly name: string;
  readonly requestType: MessageCodec<Req>;
  readonly responseType: MessageCodec<Res>;
}

export function serializer<T>(type: MessageCodec<T>): (m: T) => Buffer {
  return (m) => {
    const bytes = encodeMessage(type, m);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

export function deserializer<T>(type: MessageCodec<T>): (b: Buffer) => T {
  return (b) => decodeMessage(type, b);
}

/** A grpc-js client on an existing channel, for the hot streams that skip nice-grpc's layers. */
export function rawClient(address: string, channel: grpc.Channel): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), { channelOverride: channel });
}

/**
 * Opens a bidi stream with grpc-js directly: one event per message and no async iterator per
 * message, which halves the cost of a message on a hot stream (measured: ~50 µs vs ~100 µs).
 */
export function openBidiStream<Req, Res>(
  client: grpc.Client,
  serviceFullName: string,
  method: StreamMethod<Req, Res>,
  options: grpc.CallOptions = {},
): grpc.ClientDuplexStream<Req, Res> {
  return client.makeBidiStreamRequest(
    `/${serviceFullName}/${method.name}`,
    serializer(method.requestType),
    deserializer(method.responseType),
    new grpc.Metadata(),
    options,
  );
}
