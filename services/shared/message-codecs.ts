import { BinaryReader, type BinaryWriter } from '@bufbuild/protobuf/wire';
import type { TsProtoServiceDefinition } from 'nice-grpc';
import { LeanBinaryReader, LeanBinaryWriter } from './lean-wire';

/** What ts-proto generates for a message's encoding. */
export interface MessageEncoder<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

/** A writer that grew past this is dropped after its message, so one huge reply is not kept. */
export const KEPT_WRITER_BYTES = 1024 * 1024;

let shared: BinaryWriter = new LeanBinaryWriter();

/**
 * A message's bytes, encoded with one writer this process keeps between messages. A new writer
 * per message (ts-proto's default) starts at 128 bytes and doubles, copying as it goes, and
 * nested messages past 127 bytes shift into place: most of the encode's time for a batch of
 * writes or a feed message. Encoding is synchronous, so one writer serves the whole process.
 */
export function encodeMessage<T>(type: MessageEncoder<T>, message: T): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = type.encode(message, shared).finish();
  } catch (err) {
    shared = new LeanBinaryWriter(); // a failed encode leaves its half message and open forks behind
    throw err;
  }
  if (bytes.byteLength > KEPT_WRITER_BYTES) shared = new LeanBinaryWriter();
  return bytes;
}

/** What ts-proto generates for a message's decoding. */
export interface MessageDecoder<T> {
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

/** A message decoded with a LeanBinaryReader: its 64-bit numbers read without a BigInt. */
export function decodeMessage<T>(type: MessageDecoder<T>, bytes: Uint8Array): T {
  return type.decode(new LeanBinaryReader(bytes));
}

type AnyMessageType = TsProtoServiceDefinition['methods'][string]['requestType'];

function wireCodecsType(type: AnyMessageType): AnyMessageType {
  const encoder = type as unknown as MessageEncoder<unknown>;
  const decoder = type as unknown as MessageDecoder<unknown>;
  return {
    ...type,
    encode: (message: unknown) => ({ finish: () => encodeMessage(encoder, message) }),
    decode: (input: BinaryReader | Uint8Array, length?: number) =>
      input instanceof BinaryReader ? decoder.decode(input, length) : decodeMessage(decoder, input),
  } as AnyMessageType;
}

const converted = new WeakMap<TsProtoServiceDefinition, TsProtoServiceDefinition>();

/**
 * The same service definition, its messages encoded by encodeMessage and decoded by
 * decodeMessage: what dsat's servers and clients hand nice-grpc, which otherwise encodes each
 * message with a writer of its own and decodes with the wire library's BigInt path.
 */
export function withWireCodecs<D extends TsProtoServiceDefinition>(definition: D): D {
  let out = converted.get(definition);
  if (out === undefined) {
    const methods = Object.fromEntries(
      Object.entries(definition.methods).map(([name, m]) => [
        name,
        {
          ...m,
          requestType: wireCodecsType(m.requestType),
          responseType: wireCodecsType(m.responseType),
        },
      ]),
    );
    out = { ...definition, methods };
    converted.set(definition, out);
  }
  return out as D;
}
