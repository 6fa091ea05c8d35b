/**
 * What a process that sleeps between messages pays on this machine: a parent sends 64-byte
 * messages at a fixed rate (a 1 ms timer, as the L client does) to a child that echoes them over
 * loopback TCP, and both processes' CPU per message is printed. Run it once as is and once with
 * `--spinners 2`, which keeps every CPU busy with nice-19 loops (their CPU is not counted): the
 * difference is the cost of CPUs going idle and waking, which dsat's L runs pay at every hop.
 * Prints one JSON line per rate.
 *
 *   npm run bench:wake -- [--rates 200,1000,5000] [--seconds 5] [--spinners 0]
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { procStats } from './proc-stats';

const { values: args } = parseArgs({
  options: {
    rates: { type: 'string', default: '200,1000,5000' },
    seconds: { type: 'string', default: '5' },
    spinners: { type: 'string', default: '0' },
    echo: { type: 'boolean', default: false },
  },
});

const MESSAGE = Buffer.alloc(64);

function serveEcho(): void {
  const server = net.createServer((socket) => socket.on('data', (d) => socket.write(d)));
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as net.AddressInfo).port));
}

function cpuSeconds(pid: number): number {
  return procStats(pid)?.cpuS ?? Number.NaN;
}

async function measure(rate: number, seconds: number) {
  const echo = fork(__filename, ['--echo'], { execArgv: process.execArgv });
  const port = await new Promise<number>((resolve) =>
    echo.once('message', (m) => resolve(m as number)),
  );
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once('connect', resolve));
  let received = 0;
  socket.on('data', (d) => (received += d.length / MESSAGE.length));
  const mine0 = cpuSeconds(process.pid);
  const echo0 = cpuSeconds(echo.pid!);
  const t0 = Date.now();
  let sent = 0;
  await new Promise<void>((done) => {
    const tick = () => {
      const due = Math.floor(((Date.now() - t0) * rate) / 1000);
      for (; sent < due; sent++) socket.write(MESSAGE);
      if (Date.now() - t0 < seconds * 1000) setTimeout(tick, 1);
      else done();
    };
    tick();
  });
  // Every echo back (a loaded machine may take a while), then what either side spent.
  for (const until = Date.now() + 10_000; received < sent && Date.now() < until;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const mine = cpuSeconds(process.pid) - mine0;
  const echoed = cpuSeconds(echo.pid!) - echo0;
  socket.destroy();
  echo.kill();
  const perMessage = (cpu: number) => Math.round((cpu * 1e6) / sent);
  return {
    rate,
    sent,
    received,
    sender_us_per_message: perMessage(mine),
    echo_us_per_message: perMessage(echoed),
  };
}

async function main() {
  if (args.echo) return serveEcho();
  const spinners: ChildProcess[] = [];
  for (let i = 0; i < Number(args.spinners); i++) {
    spinners.push(
      spawn('nice', ['-n', '19', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' }),
    );
  }
  try {
    for (const rate of args.rates!.split(',').map(Number)) {
      const result = await measure(rate, Number(args.seconds));
      console.log(JSON.stringify({ type: 'wake_cost', spinners: spinners.length, ...result }));
    }
  } finally {
    for (const s of spinners) s.kill('SIGKILL');
  }
}

void main();
