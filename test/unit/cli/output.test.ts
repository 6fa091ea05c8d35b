import { progressBar } from '../../../cli/output';

describe('progressBar', () => {
  it('fills in proportion, pads the count, and stays in bounds', () => {
    expect(progressBar(0, 20_000, 10)).toBe('[----------]      0/20,000');
    expect(progressBar(5_000, 20_000, 10)).toBe('[###-------]  5,000/20,000');
    expect(progressBar(20_000, 20_000, 10)).toBe('[##########] 20,000/20,000');
    expect(progressBar(25, 20, 4)).toBe('[####] 25/20');
    expect(progressBar(0, 0, 4)).toBe('[----] 0/0');
  });
});
