'use strict';
// The demo pipeline's stage handlers (deploy/k8s/pipelines/demo.yaml), one export per stage, loaded
// by `dsat worker --handler` and by `dsat up`. The worker SDK hands each handler the decoded input
// (JSON here) and encodes what it returns as the next stage's input. Your own image replaces this
// file with your handlers.
const crypto = require('node:crypto');

/** Checks the task is a JSON object with a text; anything else is not worth a retry. */
exports.parse = async (input) => {
  if (input === null || typeof input !== 'object' || typeof input.text !== 'string') {
    // The code is listed in the stage's non_retryable_errors: the task fails at once.
    throw Object.assign(new Error('the demo takes {"text": "..."}'), { code: 'INVALID_JSON' });
  }
  return { text: input.text, parsedAt: new Date().toISOString() };
};

/** Adds the SHA-256 of the text, in hex. */
exports.hash = async (input) => ({
  ...input,
  sha256: crypto.createHash('sha256').update(input.text).digest('hex'),
});

/** Upper-cases the text. */
exports.upper = async (input) => ({ ...input, text: input.text.toUpperCase() });
