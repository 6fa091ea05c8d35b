import crypto from 'node:crypto';

// Random bytes drawn 6 KB at a time: a randomBytes call per id cost ~6 µs of the router's time
// per task.
const pool = Buffer.alloc(6144);
let at = pool.length;

/** `bytes` random bytes as lowercase hex; never all zeros (an invalid W3C trace or span id). */
export function randomHexId(bytes: 8 | 16): string {
  for (;;) {
    if (at + bytes > pool.length) {
      crypto.randomFillSync(pool);
      at = 0;
    }
    const start = at;
    at += bytes;
    for (let i = start; i < at; i++) {
      if (pool[i] !== 0) return pool.toString('hex', start, at);
    }
  }
}
