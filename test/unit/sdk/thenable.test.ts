import { settle } from '../../../sdk/thenable';

describe('settle', () => {
  const done = (v: unknown) => `done ${String(v)}`;
  const failed = (e: unknown) => `failed ${(e as Error).message}`;

  it('hands a plain value or a throw on at once, with no promise', () => {
    expect(settle(() => 7, done, failed)).toBe('done 7');
    expect(
      settle(
        () => {
          throw new Error('sync');
        },
        done,
        failed,
      ),
    ).toBe('failed sync');
  });

  it('waits for a promise, or anything with a then method, as await would', async () => {
    const fromPromise = settle(() => Promise.resolve(8), done, failed);
    expect(fromPromise).toBeInstanceOf(Promise);
    await expect(fromPromise).resolves.toBe('done 8');
    await expect(settle(() => Promise.reject(new Error('async')), done, failed)).resolves.toBe(
      'failed async',
    );
    const thenable = { then: (ok: (v: number) => void) => ok(9) };
    await expect(settle(() => thenable, done, failed)).resolves.toBe('done 9');
  });
});
