import type { Command } from 'commander';
import { Option } from 'commander';
import type { ConfigSpec, FlagValues } from './config';
import { flagName } from './config';

function showDefault(o: ConfigSpec[string]): string {
  const v = o.default;
  if (v === undefined) return '';
  if (Array.isArray(v)) return v.join(',');
  if (typeof v === 'number' && o.valueName === '<duration>') {
    const units: [number, string][] = [
      [86_400_000, 'd'],
      [3_600_000, 'h'],
      [60_000, 'm'],
      [1000, 's'],
    ];
    const unit = units.find(([ms]) => v % ms === 0 && v >= ms);
    return unit ? `${v / unit[0]}${unit[1]}` : `${v}ms`;
  }
  if (typeof v === 'number' && o.valueName === '<size>') {
    if (v % (1024 * 1024) === 0) return `${v / (1024 * 1024)}MiB`;
    if (v % 1024 === 0) return `${v / 1024}KiB`;
  }
  return String(v);
}

function describe(o: ConfigSpec[string]): string {
  const def = showDefault(o);
  return `${o.description} [env ${o.env}${def === '' ? '' : `, default ${def}`}]`;
}

/**
 * Adds one flag per config option to a command, so `--help` lists each with its environment
 * variable and default. Values stay raw strings here; `loadConfig` parses and checks them all.
 * `prefix` names flags of one service among several (`dsat up --router-port`).
 */
export function addConfigOptions(command: Command, spec: ConfigSpec, prefix = ''): Command {
  for (const [key, o] of Object.entries(spec)) {
    const flag = flagName(prefix ? `${prefix}-${key}` : key).replace(/--+/g, '--');
    if (o.boolean) {
      command.addOption(new Option(flag, describe(o)));
      command.addOption(new Option(flag.replace(/^--/, '--no-')).hideHelp());
    } else {
      command.addOption(new Option(`${flag} ${o.valueName}`, describe(o)));
    }
  }
  return command;
}

/** The flags a user gave, keyed as in the spec; unset flags are left out. */
export function flagValues(
  spec: ConfigSpec,
  opts: Record<string, unknown>,
  prefix = '',
): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (const key of Object.keys(spec)) {
    const optKey = prefix ? prefix + key[0]!.toUpperCase() + key.slice(1) : key;
    const v = opts[optKey];
    if (typeof v === 'string' || typeof v === 'boolean') out[key] = v;
  }
  return out;
}

/** The command-line arguments that give `flags`, keyed as in a spec: the inverse of flagValues. */
export function flagArgs(flags: FlagValues): string[] {
  return Object.entries(flags).flatMap(([key, v]) => {
    if (v === undefined) return [];
    if (typeof v === 'boolean') return [v ? flagName(key) : flagName(key).replace(/^--/, '--no-')];
    return [flagName(key), v];
  });
}
