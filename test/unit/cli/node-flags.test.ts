import { SERVICE_NODE_FLAGS, serviceNodeFlags } from '../../../cli/node-flags';

describe('serviceNodeFlags', () => {
  it("adds dsat's flags after the launcher's own", () => {
    expect(SERVICE_NODE_FLAGS).toContain('--max-semi-space-size=4');
    expect(serviceNodeFlags(['--require', 'tsx/cjs'], '')).toEqual([
      '--require',
      'tsx/cjs',
      ...SERVICE_NODE_FLAGS,
    ]);
  });

  it('leaves a flag to the user who set it, on the command line or in NODE_OPTIONS, in any spelling', () => {
    expect(serviceNodeFlags(['--max-semi-space-size=16'], '')).toEqual([
      '--max-semi-space-size=16',
    ]);
    expect(serviceNodeFlags(['--max_semi_space_size=1'], '')).toEqual(['--max_semi_space_size=1']);
    expect(serviceNodeFlags([], '--inspect  --max-semi-space-size=32')).toEqual([]);
    // Another flag of the user's is no reason to drop dsat's.
    expect(serviceNodeFlags([], '--max-old-space-size=512')).toEqual([...SERVICE_NODE_FLAGS]);
  });
});
