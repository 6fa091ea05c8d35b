import * as grpc from '@grpc/grpc-js';
import type {
  AckEntry,
  Assignment,
  AttemptRef,
  ConnectWorkerRequest,
  ConnectWorkerResponse,
  Welcome,
} from '../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import { openBidiStream } from '../../services/shared/raw-stream';

/**
 * A worker speaking the ConnectWorker protocol message by message, for tests that need to break
 * its rules on purpose (repeat a result, report a stale attempt, stop reading).
 */
export class RawWorker {
  readonly client: grpc.Client;
  readonly call: grpc.ClientDuplexStream<ConnectWorkerRequest, ConnectWorkerResponse>;
  readonly assigned: Assignment[] = [];
  readonly acks: AckEntry[] = [];
  readonly cancels: { attempts: AttemptRef[]; reason: string }[] = [];
  welcome: Welcome | undefined;
  status: grpc.StatusObject | undefined;
  error: grpc.ServiceError | undefined;
  private waiters: (() => void)[] = [];
  readonly ended: Promise<grpc.StatusObject>;

  constructor(address: string, credentials = grpc.credentials.createInsecure()) {
    this.client = new grpc.Client(address, credentials);
    this.call = openBidiStream(
      this.client,
      RouterServiceDefinition.fullName,
      RouterServiceDefinition.methods.connectWorker,
    );
    this.call.on('data', (m: ConnectWorkerResponse) => {
      const k = m.kind;
      if (k?.$case === 'welcome') this.welcome = k.value;
      if (k?.$case === 'assign') this.assigned.push(...k.value.tasks);
      if (k?.$case === 'ack') this.acks.push(...k.value.entries);
      if (k?.$case === 'cancel') this.cancels.push(k.value);
      this.notify();
    });
    this.call.on('error', (err: grpc.ServiceError) => {
      this.error = err;
      this.notify();
    });
    this.ended = new Promise((resolve) =>
      this.call.on('status', (s: grpc.StatusObject) => {
        this.status = s;
        this.notify();
        resolve(s);
      }),
    );
  }

  private notify() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(m: ConnectWorkerRequest): void {
    this.call.write(m);
  }

  hello(workerId: string, stages: string[], concurrency = 4, protocolVersion = 1): void {
    this.send({
      kind: {
        $case: 'hello',
        value: { workerId, stages, concurrency, protocolVersion, labels: {} },
      },
    });
  }

  credit(n: number): void {
    this.send({ kind: { $case: 'credit', value: { n } } });
  }

  /** Reports a result; `credit` rides in the same message. */
  result(
    a: { taskId: string; attempt: number },
    output: string,
    nextStages: string[] = [],
    credit = 0,
  ): void {
    this.send({
      kind: {
        $case: 'results',
        value: {
          results: [
            {
              taskId: a.taskId,
              attempt: a.attempt,
              output: Buffer.from(output),
              contentType: 'application/json',
              nextStages,
            },
          ],
          credit,
        },
      },
    });
  }

  /** Resolves once `check` holds, re-checked on every message; rejects after `ms`. */
  until(check: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`raw worker: no ${what} within ${ms} ms`)),
        ms,
      );
      const again = () => {
        if (check()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(again);
      };
      this.waiters.push(again);
    });
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}
