import {
  ConfigError,
  loadConfig,
  opt,
  parseBytes,
  parseDuration,
  statusConfigSpec,
} from '../../services/shared/config';

describe('config', () => {
  it('parses durations and sizes with units', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('7d')).toBe(604_800_000);
    expect(parseDuration('42')).toBe(42);
    expect(() => parseDuration('soon')).toThrow('not a duration');
    expect(parseBytes('4MiB')).toBe(4 * 1024 * 1024);
    expect(parseBytes('256KiB')).toBe(262_144);
    expect(() => parseBytes('4XB')).toThrow('not a size');
  });

  it('takes a flag over the environment over the default, and freezes the result', () => {
    const spec = { port: opt.port('X_PORT', 'p', 1), name: opt.string('X_NAME', 'n', 'd') };
    const config = loadConfig(spec, { port: '3' }, { X_PORT: '2', X_NAME: 'env' });
    expect(config).toEqual({ port: 3, name: 'env' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(loadConfig(spec, {}, {})).toEqual({ port: 1, name: 'd' });
  });

  it('lists every problem at once, each with its flag and environment variable', () => {
    let error: unknown;
    try {
      loadConfig(statusConfigSpec, { port: '70000', sync: 'maybe' }, { DSAT_RETENTION: 'forever' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.map((p) => `${p.flag} ${p.env}`);
    expect(problems).toEqual([
      '--port DSAT_STATUS_PORT',
      '--sync DSAT_SYNC',
      '--retention DSAT_RETENTION',
    ]);
    expect((error as Error).message).toContain('70000 is out of range 0..65535');
  });
});
