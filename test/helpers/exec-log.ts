import fs from 'node:fs';
import path from 'node:path';
import { parsePipelineText } from '../../services/tracker/pipeline-file';
import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type { ProcessMesh } from './process-mesh';
import { eventually } from './router-mesh';

/** The handler module of the tracker's fault tests (see its modes). */
export const FAULT_MODES = path.join(__dirname, '../fixtures/handlers/fault-modes.ts');

/** One line of $DSAT_TEST_EXEC_LOG, as test/fixtures/handlers/fault-modes.ts writes it. */
export interface ExecEvent {
  readonly event: string;
  readonly taskId: string;
  readonly attempt: number;
  readonly pid: number;
  readonly i: number;
  readonly [extra: string]: unknown;
}

/** The executions worker processes record, read back from the file they append to. */
export class ExecLog {
  readonly file: string;
  constructor(readonly dir: string) {
    this.file = path.join(dir, 'executions.jsonl');
  }

  /** What a worker process needs in its environment to record here. */
  get env(): NodeJS.ProcessEnv {
    return { DSAT_TEST_EXEC_LOG: this.file };
  }

  read(): ExecEvent[] {
    if (!fs.existsSync(this.file)) return [];
    return fs
      .readFileSync(this.file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as ExecEvent);
  }

  /** Creates a file the handlers wait for (`go`, `release`, ...). */
  touch(name: string): void {
    fs.writeFileSync(path.join(this.dir, name), '');
  }

  waitFor(what: string, match: (e: ExecEvent) => boolean, ms = 20_000): Promise<ExecEvent> {
    return eventually(() => this.read().find(match), ms, what);
  }
}

/** Applies a pipeline file (YAML) through the tracker, as `dsat pipelines apply` does. */
export async function applyPipeline(mesh: ProcessMesh, yaml: string): Promise<Pipeline> {
  const res = await mesh.tracker().applyPipeline({
    pipeline: parsePipelineText(yaml),
    validateOnly: false,
  });
  return res.pipeline!;
}
