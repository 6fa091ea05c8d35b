import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createFileRegistry, fromBinary, fromJson, toJson } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import YAML from 'yaml';
import { SERVICE_ENV, SERVICE_NODE_FLAGS, nodeFlagsOf } from '../../cli/node-flags';
import { loadConfig, serverOptions } from '../../services/shared/config';
import { createLogger } from '../../services/shared/logger';
import { DESCRIPTOR_SET_PATH, startGrpcServer } from '../../services/shared/grpc-server';
import type { ComposeFile, K8sObject, PodSpec } from '../helpers/deploy-manifests';
import {
  DEPLOY_DIR,
  DSAT_IMAGE,
  byKind,
  composeEnvironment,
  configProblems,
  configSpecs,
  createComposeValidator,
  createKubernetesValidator,
  dsatContainersOfCompose,
  dsatContainersOfKubernetes,
  dsatNamesIn,
  envValue,
  filesUnder,
  kustomize,
  podTemplate,
  readCompose,
  requireKubectl,
  spec,
  specNames,
  wiringProblems,
} from '../helpers/deploy-manifests';
import { REPO_ROOT } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(30_000);

const K8S_DIR = path.join(DEPLOY_DIR, 'k8s');
const OVERLAYS_DIR = path.join(DEPLOY_DIR, 'k8s-overlays');
const OVERLAYS = fs.readdirSync(OVERLAYS_DIR).sort();
const COMPOSE_FILE = path.join(DEPLOY_DIR, 'compose.yaml');
const SERVICES = ['status', 'router', 'tracker', 'worker'] as const;

const kubectl = requireKubectl();
const validateKubernetes = createKubernetesValidator();
const validateCompose = createComposeValidator();
const base = kustomize(K8S_DIR);

/** An overlay rendered; they use kustomize features of v4 and later, so older ones fail loudly. */
/**
 * The command a service's container must start with: the image's entrypoint with the service's own
 * node flags, or none where they are the image's (SERVICE_NODE_FLAGS).
 */
function ownEntrypoint(service: string): string[] | undefined {
  const flags = nodeFlagsOf(service);
  if (flags.join(' ') === SERVICE_NODE_FLAGS.join(' ')) return undefined;
  return ['node', ...flags, '/app/bin/dsat.js'];
}

function renderOverlay(overlay: string): K8sObject[] {
  const major = Number(/^v(\d+)/.exec(kubectl.kustomize ?? '')?.[1] ?? 0);
  if (major < 4) {
    throw new Error(
      `the overlays need kustomize v4 or later; kubectl ${kubectl.client} has ${kubectl.kustomize ?? 'an older one'}`,
    );
  }
  return kustomize(path.join(OVERLAYS_DIR, overlay));
}

describe('the Kubernetes manifests (kubectl kustomize, strict Kubernetes 1.27 schemas)', () => {
  it('render from deploy/k8s into valid objects', () => {
    expect(base.flatMap(validateKubernetes)).toEqual([]);
    expect(base.map((o) => `${o.kind} ${o.metadata.name}`).sort()).toEqual(
      expect.arrayContaining([
        'Namespace dsat',
        'StatefulSet status',
        'Service status',
        'Service status-headless',
        'Deployment tracker',
        'Service tracker',
        'Deployment router',
        'Service router',
        'PodDisruptionBudget router',
        'Deployment worker',
        'HorizontalPodAutoscaler worker',
        'PodDisruptionBudget worker',
      ]),
    );
  });

  it('wire services, probes, security, resources and shutdown grace together', () => {
    expect(wiringProblems(base)).toEqual([]);
  });

  it('report wiring that would fail only in a cluster', () => {
    const objects = structuredClone(base);
    const worker = podTemplate(byKind(objects, 'Deployment', 'worker'))!.spec;
    worker.containers[0]!.readinessProbe = { grpc: { port: 7402 } };
    worker.containers[0]!.volumeMounts = [];
    worker.terminationGracePeriodSeconds = 10;
    spec<{ selector: Record<string, string> }>(byKind(objects, 'Service', 'router')).selector = {
      'app.kubernetes.io/component': 'routr',
    };
    expect(wiringProblems(objects)).toEqual([
      expect.stringMatching(/Deployment worker: terminationGracePeriodSeconds 10s leaves no room/),
      expect.stringMatching(
        /container worker: readinessProbe is not a gRPC health probe on port 7404/,
      ),
      expect.stringMatching(/container worker: \/tmp is not a writable emptyDir/),
      expect.stringMatching(/Service router: selects 0 workloads/),
    ]);
  });

  it.each(OVERLAYS)('render the overlay %s into valid, wired objects', (overlay) => {
    const objects = renderOverlay(overlay);
    expect(objects.flatMap(validateKubernetes)).toEqual([]);
    expect(wiringProblems(objects)).toEqual([]);
  });

  it('run status as one pod that never shares its volume, and one tracker', () => {
    const status = spec<{
      replicas: number;
      serviceName: string;
      podManagementPolicy: string;
      updateStrategy: { type: string };
      volumeClaimTemplates: { metadata: { name: string }; spec: { accessModes: string[] } }[];
      template: { spec: PodSpec };
    }>(byKind(base, 'StatefulSet', 'status'));
    expect(status.replicas).toBe(1);
    // Each dsat container, in the base and every overlay, starts with its service's node flags.
    const containers = [base, ...OVERLAYS.map(renderOverlay)].flatMap((objects) =>
      objects.flatMap((o) =>
        (podTemplate(o)?.spec.containers ?? [])
          .filter((c) => DSAT_IMAGE.test(c.image ?? ''))
          .map((c) => ({
            where: `${o.metadata.name}/${c.name}`,
            service: c.args?.[0] ?? '',
            command: c.command,
          })),
      ),
    );
    expect(new Set(containers.map((c) => c.service))).toEqual(new Set(SERVICES));
    for (const c of containers) {
      expect([c.where, c.command]).toEqual([c.where, ownEntrypoint(c.service)]);
    }
    expect(status.podManagementPolicy).toBe('OrderedReady');
    expect(status.updateStrategy.type).toBe('RollingUpdate');
    expect(status.volumeClaimTemplates.map((t) => t.spec.accessModes)).toEqual([['ReadWriteOnce']]);
    const data = status.template.spec.containers[0]!.volumeMounts!.find(
      (m) => m.name === status.volumeClaimTemplates[0]!.metadata.name,
    );
    expect(data?.mountPath).toBe(envValue(base, status.template.spec, 'DSAT_DATA_DIR'));
    expect(spec<{ clusterIP: string }>(byKind(base, 'Service', status.serviceName)).clusterIP).toBe(
      'None',
    );

    const tracker = spec<{ replicas: number; strategy: { type: string } }>(
      byKind(base, 'Deployment', 'tracker'),
    );
    expect(tracker).toMatchObject({ replicas: 1, strategy: { type: 'Recreate' } });
  });

  it('ship the demo pipeline as a valid dsat.pipeline.v1.Pipeline', () => {
    const registry = createFileRegistry(
      fromBinary(FileDescriptorSetSchema, fs.readFileSync(DESCRIPTOR_SET_PATH)),
    );
    const pipelineType = registry.getMessage('dsat.pipeline.v1.Pipeline')!;
    const maps = base.filter(
      (o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('dsat-pipelines'),
    );
    expect(maps).toHaveLength(1);
    const file = YAML.parse(maps[0]!.data!['demo.yaml']!) as Record<string, unknown>;
    // fromJson refuses unknown fields and bad values (durations like "30s", enum names).
    const pipeline = toJson(pipelineType, fromJson(pipelineType, file as never)) as {
      name: string;
      stages: { name: string; next?: string[]; runTimeout?: string; maxAttempts?: number }[];
    };
    expect(pipeline.name).toBe('demo');
    expect(pipeline.stages.map((s) => s.name)).toEqual(['parse', 'hash', 'upper']);
    const stages = new Set(pipeline.stages.map((s) => s.name));
    for (const s of pipeline.stages) {
      expect(s).toMatchObject({ runTimeout: '30s', maxAttempts: 3 });
      for (const next of s.next ?? []) expect(stages).toContain(next);
    }
    // The tracker mounts it where docs/deploy.md says to apply it from.
    const tracker = podTemplate(byKind(base, 'Deployment', 'tracker'))!.spec;
    const volume = tracker.volumes!.find((v) => v.configMap?.name === maps[0]!.metadata.name)!;
    expect(tracker.containers[0]!.volumeMounts).toContainEqual(
      expect.objectContaining({ name: volume.name, mountPath: '/etc/dsat/pipelines' }),
    );
  });

  it('refuse a broken copy: an unknown field, a wrong type, a missing file', () => {
    const dir = tempDir('dsat-k8s-');
    try {
      const copy = path.join(dir.path, 'k8s');
      fs.cpSync(K8S_DIR, copy, { recursive: true });
      const edit = (file: string, from: string, to: string) => {
        const p = path.join(copy, file);
        const text = fs.readFileSync(p, 'utf8');
        expect(text).toContain(from);
        fs.writeFileSync(p, text.replace(from, to));
      };
      edit('tracker.yaml', 'readinessProbe:', 'readinesProbe:');
      edit('router.yaml', 'replicas: 2', 'replicas: two');
      const errors = kustomize(copy).flatMap(validateKubernetes);
      expect(errors).toEqual(
        expect.arrayContaining([
          expect.stringMatching(
            /Deployment tracker: \/spec\/template\/spec\/containers\/0 .*additional properties \(readinesProbe\)/,
          ),
          expect.stringMatching(/Deployment router: \/spec\/replicas should be integer/),
        ]),
      );

      fs.rmSync(path.join(copy, 'worker.yaml'));
      expect(() => kustomize(copy)).toThrow(/kubectl kustomize .* failed: .*worker\.yaml/s);
    } finally {
      dir.cleanup();
    }
  });

  it('refuse objects that break the schema or use a kind it does not know', () => {
    const router = byKind(base, 'Deployment', 'router');
    const broken = (change: (o: { spec: { template: { spec: PodSpec } } }) => void) => {
      const copy = structuredClone(router) as unknown as { spec: { template: { spec: PodSpec } } };
      change(copy);
      return validateKubernetes(copy as unknown as K8sObject);
    };
    expect(
      broken((o) => {
        (o.spec.template.spec as Partial<PodSpec>).containers = undefined;
      }),
    ).toEqual([expect.stringMatching(/required property 'containers'/)]);
    expect(
      broken((o) => {
        o.spec.template.spec.containers[0]!.readinessProbe = { grpc: { port: 'grpc' as never } };
      }),
    ).toEqual([expect.stringMatching(/readinessProbe\/grpc\/port should be integer/)]);
    expect(
      broken((o) => {
        o.spec.template.spec.containers[0]!.env!.push({ name: 'DSAT_X', value: null as never });
      }),
    ).toEqual([expect.stringMatching(/env\/\d+\/value should be string/)]);
    expect(
      validateKubernetes({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'Ingress',
        metadata: { name: 'x' },
      }),
    ).toEqual([expect.stringMatching(/no schema for this kind/)]);
  });
});

describe('the compose file', () => {
  const compose = readCompose(COMPOSE_FILE);
  const services = compose.services;

  it('is valid against the compose-spec schema', () => {
    expect(validateCompose(compose)).toEqual([]);
  });

  it('runs the four services, two workers and tracing, wired by name', () => {
    expect(Object.keys(services).sort()).toEqual(
      ['jaeger', 'otel-collector', 'router', 'status', 'tracker', 'worker'].sort(),
    );
    expect(services.worker!.deploy?.replicas).toBe(2);
    const ports: Record<string, string> = {
      status: '7401',
      router: '7402',
      tracker: '7403',
      worker: '7404',
    };
    for (const name of SERVICES) {
      const s = services[name]!;
      const env = composeEnvironment(s);
      expect([name, s.command]).toEqual([name, [name]]);
      expect([name, env.DSAT_HOST]).toEqual([name, '0.0.0.0']);
      expect([name, env[`DSAT_${name.toUpperCase()}_PORT`]]).toEqual([name, ports[name]]);
      expect(s.healthcheck?.test).toEqual([
        'CMD',
        'node',
        '/app/deploy/health-check.js',
        `127.0.0.1:${ports[name]}`,
      ]);
      // Addresses name services of this file.
      const addresses = ['DSAT_STATUS_ADDRESS', 'DSAT_TRACKER_ADDRESS', 'DSAT_ROUTERS']
        .flatMap((k) => (env[k] ?? '').split(','))
        .filter(Boolean);
      for (const a of addresses) expect(Object.keys(services)).toContain(a.split(':')[0]);
      const otlp = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT!);
      expect(Object.keys(services)).toContain(otlp.hostname);
      expect(env.OTEL_SERVICE_NAME).toBe(`dsat-${name}`);
    }
    // The image's entrypoint, with the service's own node flags where they differ from it.
    for (const name of SERVICES) {
      expect([name, services[name]!.entrypoint]).toEqual([name, ownEntrypoint(name)]);
    }
    expect(composeEnvironment(services.status!).DSAT_DATA_DIR).toBe('/data');
    expect(services.status!.volumes).toContain('status-data:/data');
    expect(Object.keys(compose.volumes ?? {})).toContain('status-data');
  });

  it('starts each service after what it depends on is healthy', () => {
    for (const [name, s] of Object.entries(services)) {
      const deps = s.depends_on ?? {};
      expect(Array.isArray(deps)).toBe(false);
      for (const [dep, { condition }] of Object.entries(
        deps as Record<string, { condition?: string }>,
      )) {
        expect([name, dep, Object.keys(services).includes(dep)]).toEqual([name, dep, true]);
        if (condition === 'service_healthy') {
          expect([name, dep, services[dep]!.healthcheck?.test !== undefined]).toEqual([
            name,
            dep,
            true,
          ]);
        }
      }
    }
    expect(Object.keys(services.worker!.depends_on!)).toEqual(
      expect.arrayContaining(['router', 'tracker']),
    );
  });

  it('mounts files that exist, and a collector config whose pipeline is complete', () => {
    for (const s of Object.values(services)) {
      for (const v of s.volumes ?? []) {
        const source = typeof v === 'string' ? v.split(':')[0]! : (v.source ?? '');
        if (source.startsWith('.'))
          expect(fs.existsSync(path.resolve(DEPLOY_DIR, source))).toBe(true);
      }
      if (typeof s.build === 'object') {
        const context = path.resolve(DEPLOY_DIR, s.build.context ?? '.');
        expect(fs.existsSync(path.join(context, s.build.dockerfile ?? 'Dockerfile'))).toBe(true);
      }
    }
    const collector = YAML.parse(
      fs.readFileSync(path.join(DEPLOY_DIR, 'otel-collector.yaml'), 'utf8'),
    ) as {
      receivers: Record<string, { protocols: Record<string, { endpoint: string }> }>;
      processors: Record<string, unknown>;
      exporters: Record<string, { endpoint: string }>;
      service: {
        pipelines: Record<string, Record<'receivers' | 'processors' | 'exporters', string[]>>;
      };
    };
    const traces = collector.service.pipelines.traces!;
    for (const part of ['receivers', 'processors', 'exporters'] as const) {
      for (const name of traces[part]) expect(Object.keys(collector[part])).toContain(name);
    }
    const endpoint = new URL(composeEnvironment(services.router!).OTEL_EXPORTER_OTLP_ENDPOINT!);
    expect(collector.receivers.otlp!.protocols.http!.endpoint).toBe(`0.0.0.0:${endpoint.port}`);
    expect(collector.exporters['otlp/jaeger']!.endpoint.split(':')[0]).toBe('jaeger');
  });

  it('refuses a broken copy: an unknown key, a bad depends_on condition', () => {
    const broken = structuredClone(compose) as ComposeFile & {
      services: Record<string, Record<string, unknown>>;
    };
    broken.services.router!.enviroment = { DSAT_HOST: '0.0.0.0' };
    broken.services.worker!.depends_on = { router: { condition: 'service_happy' } };
    expect(validateCompose(broken)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /\/services\/router should NOT have additional properties \(enviroment\)/,
        ),
        expect.stringMatching(
          /\/services\/worker\/depends_on\/router\/condition should be equal to one of the allowed values/,
        ),
      ]),
    );
  });
});

describe('the configuration the deploy files set', () => {
  const composeContainers = dsatContainersOfCompose(
    readCompose(COMPOSE_FILE),
    'deploy/compose.yaml',
  );

  it('names only DSAT_* variables that a service reads, in every file of deploy/ and the docs', () => {
    const files = [
      ...filesUnder(DEPLOY_DIR).filter((f) => !f.startsWith(path.join(DEPLOY_DIR, 'schemas'))),
      path.join(REPO_ROOT, 'docs/deploy.md'),
    ];
    const known = new Set([...configSpecs().values()].flatMap((s) => [...specNames(s).env]));
    const unknown = [...dsatNamesIn(files)].filter(([name]) => !known.has(name));
    expect(unknown).toEqual([]);
  });

  it('gives each dsat container only the variables and flags of its own service', () => {
    const containers = [
      ...dsatContainersOfKubernetes(base),
      ...OVERLAYS.flatMap((o) => dsatContainersOfKubernetes(renderOverlay(o))),
      ...composeContainers,
    ];
    expect(containers.length).toBeGreaterThanOrEqual(12);
    expect(configProblems(containers)).toEqual([]);
  });

  it('reports a variable or flag that no service reads', () => {
    const worker = composeContainers.find((c) => c.args[0] === 'worker')!;
    expect(
      configProblems([
        {
          ...worker,
          env: [...worker.env, 'DSAT_ROUTER_STAGES', 'DSAT_WORKER_STAGE', 'NODE_OPTIONS'],
        },
        { ...worker, args: ['worker', '--stages', 'parse', '--data-dir=/data'] },
      ]),
    ).toEqual([
      'deploy/compose.yaml service worker: DSAT_ROUTER_STAGES is not a variable of the worker service',
      'deploy/compose.yaml service worker: DSAT_WORKER_STAGE is not a variable of the worker service',
      'deploy/compose.yaml service worker: NODE_OPTIONS is neither a DSAT_* nor an OTEL_* variable',
      'deploy/compose.yaml service worker: --data-dir is not a flag of the worker service',
    ]);
  });
});

describe('the image', () => {
  const dockerfile = fs.readFileSync(path.join(DEPLOY_DIR, 'Dockerfile'), 'utf8');
  const dockerignore = fs.readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');

  it('builds deps apart, runs slim and non-root, with the service as the command', () => {
    expect(dockerfile).toMatch(/^FROM node:20-bookworm AS deps$/m);
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev\b/m);
    expect(dockerfile).toMatch(/^FROM node:20-bookworm-slim AS runtime$/m);
    // The runtime runs the compiled dist/ of a build stage, not tsx on the sources.
    expect(dockerfile).toMatch(/^FROM node:20-bookworm AS build$/m);
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    expect(dockerfile).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m);
    const user = /^USER (\S+)$/m.exec(dockerfile)?.[1];
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    // The services start with the node flags `dsat up --processes` gives them.
    expect(JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1] ?? 'null')).toEqual([
      'node',
      ...SERVICE_NODE_FLAGS,
      '/app/bin/dsat.js',
    ]);
    // ... and their environment.
    for (const [key, value] of Object.entries(SERVICE_ENV)) {
      expect(dockerfile).toMatch(new RegExp(`^\\s+${key}=${value} \\\\$`, 'm'));
    }
    expect(dockerfile).toMatch(/CMD \["node", "\/app\/deploy\/health-check\.js"\]/);
    // Everything the services load at run time gets into the build context, and tests do not.
    expect(dockerignore[dockerignore.findIndex((l) => !l.startsWith('#'))]).toBe('*');
    for (const kept of [
      'bin/',
      'cli/',
      'services/',
      'gen/',
      'deploy/health-check.js',
      'deploy/demo-handlers.js',
      'deploy/k8s/pipelines/demo.yaml',
      'tsconfig.build.json',
      'scripts/build.sh',
    ]) {
      expect(dockerignore).toContain(`!${kept}`);
      expect(fs.existsSync(path.join(REPO_ROOT, kept))).toBe(true);
    }
    expect(dockerignore.some((l) => l.startsWith('!test'))).toBe(false);
  });

  it('health check exits 0 for SERVING and 1 otherwise', async () => {
    const runCheck = (address: string) =>
      new Promise<number | null>((resolve) => {
        spawn(process.execPath, [path.join(DEPLOY_DIR, 'health-check.js'), address], {
          stdio: 'ignore',
        }).on('exit', resolve);
      });
    const server = await startGrpcServer({
      name: 'health-check-test',
      config: loadConfig(serverOptions('test', 0), { shutdownGrace: '1s' }, {}),
      logger: createLogger('test', 'silent'),
      services: [],
    });
    try {
      expect(await runCheck(server.address)).toBe(0);
      server.setServing(false);
      expect(await runCheck(server.address)).toBe(1);
    } finally {
      await server.stop();
    }
    expect(await runCheck(server.address)).toBe(1);
  });

  it('demo handlers run the demo pipeline: parse, hash, upper', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const handlers = require(path.join(DEPLOY_DIR, 'demo-handlers.js')) as Record<
      'parse' | 'hash' | 'upper',
      (input: unknown) => Promise<Record<string, string>>
    >;
    let doc: unknown = { text: 'hi' };
    for (const stage of ['parse', 'hash', 'upper'] as const) doc = await handlers[stage](doc);
    expect(doc).toMatchObject({ text: 'HI', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    await expect(handlers.parse('not an object')).rejects.toMatchObject({
      code: 'INVALID_JSON',
    });
  });
});
