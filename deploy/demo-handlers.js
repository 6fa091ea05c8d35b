'use strict';
// The demo pipeline's stage handlers (deploy/k8s/pipelines/demo.yaml), one export per stage, loaded
// by `dsat worker --handler` and by `dsat up`. The worker SDK hands each handler the decoded input
// (JSON here) and encodes what it returns as the next stage's input. Your own image replaces this
// file with your handlers.
const crypto = require('node:crypto');
const { setTimeout: sleep } = require('node:timers/promises');

/**
 * Checks the task is a JSON object with a text; anything else is not worth a retry. `workMs` in
 * the input (at most 60,000) makes this stage take that long, to watch a running task or to try a
 * shutdown while one runs.
 */
exports.parse = async (input, ctx) => {
  if (input === null || typeof input !== 'object' || typeof input.text !== 'string') {
    // The code is listed in the stage's non_retryable_errors: the task fails at once.
    throw Object.assign(new Error('the demo takes {"text": "..."}'), { code: 'INVALID_JSON' });
  }
  const workMs = Math.min(Number(input.workMs) || 0, 60_000);
  // Rejects at once when the attempt is taken away (cancel, timeout, shutdown).
  if (workMs > 0) await sleep(workMs, undefined, { signal: ctx.signal });
  return { text: input.text, parsedAt: new Date().toISOString() };
};

/** Adds the SHA-256 of the text, in hex. */
exports.hash = async (input) => ({
  ...input,
  sha256: crypto.createHash('sha256').update(input.text).digest('hex'),
});

/** Upper-cases the text. */
exports.upper = async (input) => ({ ...input, text: input.text.toUpperCase() });
