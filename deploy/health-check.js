'use strict';
// Docker HEALTHCHECK for the dsat image: asks grpc.health.v1.Health/Check on the service running
// in this container and exits 0 only for SERVING. Usage: node deploy/health-check.js [host:port]
// Without an address it finds the service (`dsat.js <service>` among the processes) and its port
// (`--port`, else DSAT_<SERVICE>_PORT, else the default). Kubernetes uses its own gRPC probes.
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');

const DEFAULT_PORTS = { status: 7401, router: 7402, tracker: 7403, worker: 7404 };

function serviceCommandLine() {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let argv;
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const i = argv.findIndex((a) => a.endsWith('bin/dsat.js'));
    if (i >= 0 && argv[i + 1] in DEFAULT_PORTS) return argv.slice(i + 1);
  }
  throw new Error('no dsat service process found; pass host:port');
}

function targetAddress() {
  if (process.argv[2]) return process.argv[2];
  const [service, ...args] = serviceCommandLine();
  const flag = args.findIndex((a) => a === '--port' || a.startsWith('--port='));
  const port =
    flag < 0
      ? process.env[`DSAT_${service.toUpperCase()}_PORT`] || DEFAULT_PORTS[service]
      : args[flag].includes('=')
        ? args[flag].slice('--port='.length)
        : args[flag + 1];
  return `127.0.0.1:${port}`;
}

// HealthCheckRequest{service: ""} is the empty message; the response's field 1 is the status.
const SERVING = 1;
const decodeStatus = (buf) => (buf.length >= 2 && buf[0] === 0x08 ? buf[1] : 0);

let address;
try {
  address = targetAddress();
} catch (err) {
  process.stderr.write(`health check: ${err.message}\n`);
  process.exit(1);
}
const client = new grpc.Client(address, grpc.credentials.createInsecure());
client.makeUnaryRequest(
  '/grpc.health.v1.Health/Check',
  () => Buffer.alloc(0),
  decodeStatus,
  {},
  new grpc.Metadata(),
  { deadline: Date.now() + 2000 },
  (err, status) => {
    client.close();
    if (err) process.stderr.write(`health check ${address}: ${err.message}\n`);
    else if (status !== SERVING)
      process.stderr.write(`health check ${address}: status ${status}\n`);
    process.exit(!err && status === SERVING ? 0 : 1);
  },
);
