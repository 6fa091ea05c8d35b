import { Pipeline } from '../gen/dsat/pipeline/v1/pipeline';

/** The pipeline the status benchmarks' tasks pin (bench v1, s1 → … → sN): the store checks it. */
export function benchPipeline(stages: number): Pipeline {
  return Pipeline.fromPartial({
    name: 'bench',
    stages: Array.from({ length: stages }, (_, i) => ({
      name: `s${i + 1}`,
      next: i + 1 < stages ? [`s${i + 2}`] : [],
    })),
  });
}
