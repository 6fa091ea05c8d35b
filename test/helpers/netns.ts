import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Network namespaces joined to this one by veth pairs, for partition tests. Each namespace gets a
 * /30: the host end of its veth is .1, the namespace end .2. Link down/up on the host end is the
 * partition (the kernel here has no netem). Needs root and iproute2 (scripts/test-setup.sh).
 */
export interface NetnsLink {
  /** The namespace, e.g. `dsat-1234-w0`. */
  readonly ns: string;
  /** The veth end in this (the host) namespace. */
  readonly hostIf: string;
  readonly hostIp: string;
  readonly nsIp: string;
  /** Cuts the link: both ends lose carrier, packets already in flight are dropped. */
  down(): Promise<void>;
  up(): Promise<void>;
  /** The command prefix that runs a program inside the namespace. */
  exec(command: string, args: string[]): { command: string; args: string[] };
}

/** Why namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (the ip command) is not installed; run scripts/test-setup.sh';
  }
  return undefined;
}

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await run('ip', args);
  return stdout;
}

/**
 * The namespaces of one test run, named after its pid so that runs side by side never meet.
 * `cleanup()` deletes them (which deletes their veth pairs) and must run in afterAll.
 */
export class NetnsLab {
  readonly links: NetnsLink[] = [];
  private readonly prefix: string;
  private subnet: [number, number] | undefined;

  constructor(tag = 'n') {
    this.prefix = `dsat-${process.pid}-${tag}`;
  }

  /** A /24 in 10.0.0.0/8 derived from the pid, moved on while the host already routes it. */
  private async pickSubnet(): Promise<[number, number]> {
    if (this.subnet) return this.subnet;
    const routes = await ip('-4', 'route', 'show', 'table', 'all');
    let n = (process.pid * 7 + this.prefix.length) % (250 * 256);
    for (;;) {
      const a = 1 + Math.floor(n / 256);
      const b = n % 256;
      if (!routes.includes(`10.${a}.${b}.`)) {
        this.subnet = [a, b];
        return this.subnet;
      }
      n = (n + 1) % (250 * 256);
    }
  }

  /** Creates namespace number `i` (0..63) with its veth pair, both ends up, loopback up. */
  async add(i: number): Promise<NetnsLink> {
    if (!Number.isInteger(i) || i < 0 || i > 63) throw new Error(`namespace index ${i}`);
    const [a, b] = await this.pickSubnet();
    const ns = `${this.prefix}${i}`;
    // Interface names are at most 15 characters.
    const id = `${process.pid.toString(36)}${i.toString(36)}`;
    const hostIf = `dh${id}`;
    const nsIf = `dn${id}`;
    const hostIp = `10.${a}.${b}.${i * 4 + 1}`;
    const nsIp = `10.${a}.${b}.${i * 4 + 2}`;
    await ip('netns', 'add', ns);
    const link: NetnsLink = {
      ns,
      hostIf,
      hostIp,
      nsIp,
      down: async () => void (await ip('link', 'set', hostIf, 'down')),
      up: async () => void (await ip('link', 'set', hostIf, 'up')),
      exec: (command, args) => ({ command: 'ip', args: ['netns', 'exec', ns, command, ...args] }),
    };
    this.links.push(link);
    await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns);
    await ip('addr', 'add', `${hostIp}/30`, 'dev', hostIf);
    await ip('link', 'set', hostIf, 'up');
    await ip('-n', ns, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf);
    await ip('-n', ns, 'link', 'set', nsIf, 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    return link;
  }

  /** Deletes every namespace of this lab; a veth pair goes with its namespace end. */
  async cleanup(): Promise<void> {
    for (const l of this.links.splice(0)) {
      await ip('netns', 'delete', l.ns).catch(() => undefined);
      // The host end normally dies with its peer; make sure, in case the namespace was half made.
      await ip('link', 'delete', l.hostIf).catch(() => undefined);
    }
  }
}
