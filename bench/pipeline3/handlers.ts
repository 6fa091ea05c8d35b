import type { StageDoc } from './workload';
import { stage2 as sha256Body, stage3 as upperCaseBody } from './workload';

/**
 * The three stage handlers of pipeline3 for `dsat worker --handler`: the worker SDK has already
 * decoded the JSON input, so stage 1 only stamps it.
 */
export function stage1(doc: StageDoc): StageDoc {
  doc.stage1At = Date.now();
  return doc;
}

export function stage2(doc: StageDoc): StageDoc {
  return sha256Body(doc);
}

export function stage3(doc: StageDoc): StageDoc {
  return upperCaseBody(doc);
}
