import { InvalidArgumentError, Option } from 'commander';

/**
 * An option that takes a whole number from `min` to `max`. Anything else is a usage error that
 * names the flag (commander prints it; the program exits 2), never a NaN sent to a service.
 */
export function wholeNumberOption(
  flags: string,
  description: string,
  defaultValue: number | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): Option {
  const option = new Option(flags, description).argParser((value) =>
    parseWholeNumber(value, min, max),
  );
  return defaultValue === undefined ? option : option.default(defaultValue);
}

export function parseWholeNumber(value: string, min: number, max: number): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(
      max === Number.MAX_SAFE_INTEGER
        ? `must be a whole number of at least ${min}.`
        : `must be a whole number from ${min} to ${max}.`,
    );
  }
  return n;
}
