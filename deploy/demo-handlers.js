'use strict';
// The demo pipeline's stage handlers (deploy/k8s/pipelines/demo.yaml), one export per stage, loaded
// by the worker from DSAT_HANDLER. Each takes the task's payload bytes and returns the payload of
// the next stage. Your own image replaces this file with your handlers.
const crypto = require('node:crypto');

/** Checks the payload is JSON and passes it on compacted; bad JSON is not worth a retry. */
exports.parse = async (payload) => {
  try {
    return Buffer.from(JSON.stringify(JSON.parse(Buffer.from(payload).toString('utf8'))));
  } catch (err) {
    throw Object.assign(new Error(`payload is not JSON: ${err.message}`), { code: 'INVALID_JSON' });
  }
};

/** The SHA-256 of the payload, in hex. */
exports.hash = async (payload) =>
  Buffer.from(crypto.createHash('sha256').update(payload).digest('hex'));

/** The payload, upper-cased. */
exports.upper = async (payload) => Buffer.from(Buffer.from(payload).toString('utf8').toUpperCase());
