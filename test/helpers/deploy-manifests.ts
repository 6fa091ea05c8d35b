import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Ajv from 'ajv';
import YAML from 'yaml';
import * as config from '../../services/shared/config';
import type { ConfigSpec } from '../../services/shared/config';
import { flagName, parseDuration } from '../../services/shared/config';
import { REPO_ROOT } from './processes';

/**
 * Offline checks of the deploy files: kustomize through kubectl, JSON schemas vendored in
 * deploy/schemas/ by scripts/vendor-schemas.mjs, and the services' own config specs.
 */

export const DEPLOY_DIR = path.join(REPO_ROOT, 'deploy');
const SCHEMA_DIR = path.join(DEPLOY_DIR, 'schemas');

// ---------------------------------------------------------------------------------------------
// Kubernetes objects, as far as the checks read them.

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}
export interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: unknown;
  tcpSocket?: unknown;
  exec?: unknown;
}
export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
export interface PodSpec {
  containers: Container[];
  terminationGracePeriodSeconds?: number;
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    seccompProfile?: { type: string };
  };
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: object }[];
}
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // Shapes differ by kind; the checks narrow what they read.
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

export function describeObject(o: K8sObject): string {
  return `${o.apiVersion}/${o.kind} ${o.metadata?.name ?? '(no name)'}`;
}

/** The pod template of a workload, if the object has one. */
export function podTemplate(
  o: K8sObject,
): { metadata?: { labels?: Record<string, string> }; spec: PodSpec } | undefined {
  const spec = o.spec as
    | {
        template?: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
        jobTemplate?: { spec?: { template?: { spec: PodSpec } } };
      }
    | undefined;
  return spec?.template ?? spec?.jobTemplate?.spec?.template;
}

// ---------------------------------------------------------------------------------------------
// kubectl kustomize

export interface KubectlInfo {
  readonly client: string;
  /** e.g. `v5.5.0`; kubectl before 1.21 does not print it. */
  readonly kustomize: string | undefined;
}

/**
 * kubectl's versions, or a loud error when it is missing: `npm test` installs it through
 * scripts/test-setup.sh (Debian's kubernetes-client when the machine has no kubectl).
 */
export function requireKubectl(): KubectlInfo {
  const r = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      `kubectl is needed to render deploy/k8s and was not found or failed (${
        r.error?.message ?? r.stderr
      }). Install it: bash scripts/test-setup.sh --if-missing kubectl kubernetes-client`,
    );
  }
  return {
    client:
      /Client Version:\s*(?:version\.Info\{.*GitVersion:")?(v[\d.]+)/.exec(r.stdout)?.[1] ?? '',
    kustomize: /Kustomize Version:\s*(v[\d.]+)/.exec(r.stdout)?.[1],
  };
}

/** Renders a kustomization with `kubectl kustomize DIR`; throws with kubectl's message. */
export function kustomize(dir: string): K8sObject[] {
  let out: string;
  try {
    out = execFileSync('kubectl', ['kustomize', dir], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr || e.message}`);
  }
  return YAML.parseAllDocuments(out)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

// ---------------------------------------------------------------------------------------------
// Schemas

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

const INT32 = 2 ** 31;
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$/;

function createAjv(): Ajv.Ajv {
  // Every format the vendored schemas use is defined here; an unknown one stops the check.
  const ajv = new Ajv({ allErrors: true, jsonPointers: true, unknownFormats: true });
  ajv.addFormat('int32', {
    type: 'number',
    validate: (n: number) => Number.isInteger(n) && n >= -INT32 && n < INT32,
  });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  ajv.addFormat('double', { type: 'number', validate: () => true });
  ajv.addFormat('byte', /^[A-Za-z0-9+/]*={0,2}$/);
  ajv.addFormat('quantity', QUANTITY);
  return ajv;
}

function formatErrors(errors: Ajv.ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => {
    const extra =
      'additionalProperty' in e.params
        ? ` (${(e.params as { additionalProperty: string }).additionalProperty})`
        : 'allowedValues' in e.params
          ? ` (${JSON.stringify((e.params as { allowedValues: unknown }).allowedValues)})`
          : '';
    return `${e.dataPath || '/'} ${e.message ?? e.keyword}${extra}`;
  });
}

export type Validate = (value: unknown) => string[];

/** Validates one Kubernetes object against the strict Kubernetes 1.27 schema of its kind. */
export function createKubernetesValidator(): (o: K8sObject) => string[] {
  const bundle = readJson<{ kinds: Record<string, string>; definitions: object }>(
    path.join(SCHEMA_DIR, 'kubernetes.json'),
  );
  const ajv = createAjv();
  ajv.addSchema({ $id: 'kubernetes', definitions: bundle.definitions });
  return (o) => {
    const id = bundle.kinds[`${o.apiVersion}/${o.kind}`];
    if (!id) {
      return [
        `${describeObject(o)}: no schema for this kind (deploy/schemas has ${Object.keys(bundle.kinds).join(', ')})`,
      ];
    }
    const validate = ajv.getSchema(`kubernetes#/definitions/${id}`)!;
    if (validate(o)) return [];
    return formatErrors(validate.errors).map((e) => `${describeObject(o)}: ${e}`);
  };
}

/** Validates a compose file (merge keys resolved) against the compose-spec schema. */
export function createComposeValidator(): Validate {
  const validate = createAjv().compile(
    readJson<object>(path.join(SCHEMA_DIR, 'compose-spec.json')),
  );
  return (value) => (validate(value) ? [] : formatErrors(validate.errors));
}

// ---------------------------------------------------------------------------------------------
// Wiring

const SERVICES = ['status', 'router', 'tracker', 'worker'] as const;

export function byKind(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in ${objects.map(describeObject).join(', ')}`);
  return found;
}

export function spec<T>(o: K8sObject): T {
  return o.spec as T;
}

export function envValue(objects: K8sObject[], pod: PodSpec, name: string): string | undefined {
  for (const c of pod.containers) {
    const direct = c.env?.find((e) => e.name === name);
    if (direct) return direct.value;
    for (const from of c.envFrom ?? []) {
      const map = objects.find(
        (o) => o.kind === 'ConfigMap' && o.metadata.name === from.configMapRef?.name,
      );
      if (map?.data?.[name] !== undefined) return map.data[name];
    }
  }
  return undefined;
}

export const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/**
 * Every cross-reference and setting the services rely on, for one rendered kustomization: an
 * empty list when all is wired.
 */
export function wiringProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    if (o.kind !== 'Namespace' && o.metadata.namespace !== 'dsat') {
      problems.push(`${describeObject(o)}: not in the namespace dsat`);
    }
  }
  const workloads = objects.filter((o) => podTemplate(o));
  const names = (kind: string) =>
    new Set(objects.filter((o) => o.kind === kind).map((o) => o.metadata.name));
  const configMaps = names('ConfigMap');
  const graceMs = (pod: PodSpec) =>
    parseDuration(envValue(objects, pod, 'DSAT_SHUTDOWN_GRACE') ?? '5s');

  for (const o of workloads) {
    const where = describeObject(o);
    const template = podTemplate(o)!;
    const pod = template.spec;
    const selector = spec<{ selector?: { matchLabels?: Record<string, string> } }>(o).selector;
    if (selector?.matchLabels && !matches(selector.matchLabels, template.metadata?.labels)) {
      problems.push(`${where}: selector does not match its pod labels`);
    }
    if (pod.securityContext?.runAsNonRoot !== true) problems.push(`${where}: not runAsNonRoot`);
    if (pod.securityContext?.seccompProfile?.type !== 'RuntimeDefault') {
      problems.push(`${where}: seccompProfile is not RuntimeDefault`);
    }
    const termination = (pod.terminationGracePeriodSeconds ?? 30) * 1000;
    if (termination < graceMs(pod) * 2) {
      problems.push(
        `${where}: terminationGracePeriodSeconds ${termination / 1000}s leaves no room after DSAT_SHUTDOWN_GRACE ${graceMs(pod)}ms`,
      );
    }
    for (const v of pod.volumes ?? []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) {
        problems.push(`${where}: volume ${v.name} names a missing ConfigMap ${v.configMap.name}`);
      }
    }
    for (const c of pod.containers) {
      const cw = `${where} container ${c.name}`;
      const service = c.args?.[0];
      if (!SERVICES.includes(service as (typeof SERVICES)[number])) {
        problems.push(`${cw}: args should start with the service, got ${JSON.stringify(c.args)}`);
        continue;
      }
      const port = Number(envValue(objects, pod, `DSAT_${service!.toUpperCase()}_PORT`));
      const containerPorts = (c.ports ?? []).map((p) => p.containerPort);
      if (!containerPorts.includes(port)) {
        problems.push(`${cw}: DSAT_${service!.toUpperCase()}_PORT ${port} is not a containerPort`);
      }
      for (const kind of ['readinessProbe', 'livenessProbe'] as const) {
        const probe = c[kind];
        if (probe?.grpc?.port !== port) {
          problems.push(`${cw}: ${kind} is not a gRPC health probe on port ${port}`);
        }
      }
      if (c.startupProbe && c.startupProbe.grpc?.port !== port) {
        problems.push(`${cw}: startupProbe is not a gRPC health probe on port ${port}`);
      }
      const sc = c.securityContext;
      if (sc?.readOnlyRootFilesystem !== true) problems.push(`${cw}: root filesystem writable`);
      if (sc?.allowPrivilegeEscalation !== false) problems.push(`${cw}: privilege escalation`);
      if (!sc?.capabilities?.drop?.includes('ALL'))
        problems.push(`${cw}: capabilities not dropped`);
      const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp');
      if (!pod.volumes?.some((v) => v.name === tmp?.name && v.emptyDir)) {
        problems.push(`${cw}: /tmp is not a writable emptyDir (tsx caches there)`);
      }
      if (!c.resources?.requests?.cpu || !c.resources.requests.memory) {
        problems.push(`${cw}: no cpu and memory requests`);
      }
      if (!c.resources?.limits?.memory) problems.push(`${cw}: no memory limit`);
      for (const from of c.envFrom ?? []) {
        if (from.configMapRef && !configMaps.has(from.configMapRef.name)) {
          problems.push(`${cw}: envFrom names a missing ConfigMap ${from.configMapRef.name}`);
        }
      }
    }
  }

  for (const s of objects.filter((o) => o.kind === 'Service')) {
    const svc = spec<{ selector?: Record<string, string>; ports?: { targetPort?: unknown }[] }>(s);
    const targets = workloads.filter((w) =>
      matches(svc.selector ?? {}, podTemplate(w)!.metadata?.labels),
    );
    if (targets.length !== 1) {
      problems.push(`${describeObject(s)}: selects ${targets.length} workloads, not one`);
      continue;
    }
    const portNames = podTemplate(targets[0]!)!.spec.containers.flatMap((c) =>
      (c.ports ?? []).map((p) => p.name),
    );
    for (const p of svc.ports ?? []) {
      if (typeof p.targetPort === 'string' && !portNames.includes(p.targetPort)) {
        problems.push(`${describeObject(s)}: targetPort ${p.targetPort} is not a container port`);
      }
    }
  }
  for (const pdb of objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
    const sel = spec<{ selector: { matchLabels: Record<string, string> } }>(pdb).selector;
    if (!workloads.some((w) => matches(sel.matchLabels, podTemplate(w)!.metadata?.labels))) {
      problems.push(`${describeObject(pdb)}: selects no workload`);
    }
  }
  for (const hpa of objects.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
    const ref = spec<{ scaleTargetRef: { kind: string; name: string } }>(hpa).scaleTargetRef;
    const target = objects.find((o) => o.kind === ref.kind && o.metadata.name === ref.name);
    if (!target) problems.push(`${describeObject(hpa)}: scales a missing ${ref.kind} ${ref.name}`);
    else if (spec<{ replicas?: number }>(target).replicas !== undefined) {
      problems.push(`${describeObject(target)}: sets replicas, which its autoscaler owns`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Compose

export interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string } | string;
  entrypoint?: string[] | string;
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  healthcheck?: { test?: string[] | string; disable?: boolean };
  depends_on?: Record<string, { condition?: string }> | string[];
  volumes?: (string | { type?: string; source?: string; target?: string })[];
  deploy?: { replicas?: number };
  ports?: (string | number | object)[];
}
export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** Reads a compose file as Compose does, YAML merge keys (`<<: *anchor`) included. */
export function readCompose(file: string): ComposeFile {
  return YAML.parse(fs.readFileSync(file, 'utf8'), { merge: true }) as ComposeFile;
}

export function composeEnvironment(s: ComposeService): Record<string, string> {
  const env = s.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((e) => [e.split('=')[0]!, e.includes('=') ? e.slice(e.indexOf('=') + 1) : '']),
    );
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

// ---------------------------------------------------------------------------------------------
// Configuration names

/** Every `*ConfigSpec` that services/shared/config.ts exports, by service (`status`, …). */
export function configSpecs(): Map<string, ConfigSpec> {
  const specs = new Map<string, ConfigSpec>();
  for (const [name, value] of Object.entries(config)) {
    const m = /^(\w+)ConfigSpec$/.exec(name);
    if (m) specs.set(m[1]!, value as ConfigSpec);
  }
  return specs;
}

/** The environment variables and flags a spec reads. */
export function specNames(spec: ConfigSpec): { env: Set<string>; flags: Set<string> } {
  const env = new Set<string>();
  const flags = new Set<string>();
  for (const [key, o] of Object.entries(spec)) {
    env.add(o.env);
    flags.add(flagName(key));
    if (o.boolean) flags.add(flagName(key).replace(/^--/, '--no-'));
  }
  return { env, flags };
}

/** A container running the dsat image, as the config check sees it. */
export interface DsatContainer {
  /** Where it is declared, for messages. */
  readonly where: string;
  /** The arguments after `node bin/dsat.js`: the service (or command) and its flags. */
  readonly args: readonly string[];
  /** Every environment variable it gets, from `env`, `envFrom` or compose's `environment`. */
  readonly env: readonly string[];
}

export const DSAT_IMAGE = /(^|\/)dsat(:[\w.-]+)?(@sha256:[0-9a-f]+)?$/;

/** The image's script: a command that names it replaces the entrypoint, node flags and all. */
const DSAT_SCRIPT = '/app/bin/dsat.js';

/** What a container passes to dsat: its command and args, after the script when they name it. */
function dsatArgs(words: readonly string[]): string[] {
  const script = words.indexOf(DSAT_SCRIPT);
  return words.slice(script + 1);
}

export function dsatContainersOfKubernetes(objects: K8sObject[]): DsatContainer[] {
  const configMaps = new Map(
    objects.filter((o) => o.kind === 'ConfigMap').map((o) => [o.metadata.name, o.data ?? {}]),
  );
  const out: DsatContainer[] = [];
  for (const o of objects) {
    for (const c of podTemplate(o)?.spec.containers ?? []) {
      if (!DSAT_IMAGE.test(c.image ?? '')) continue;
      const fromMaps = (c.envFrom ?? []).flatMap((e) =>
        e.configMapRef ? Object.keys(configMaps.get(e.configMapRef.name) ?? {}) : [],
      );
      out.push({
        where: `${describeObject(o)} container ${c.name}`,
        args: dsatArgs([...(c.command ?? []), ...(c.args ?? [])]),
        env: [...fromMaps, ...(c.env ?? []).map((e) => e.name)],
      });
    }
  }
  return out;
}

/** A compose command or entrypoint as words: a string is split at spaces. */
function composeWords(value: string[] | string): string[] {
  return typeof value === 'string' ? value.split(/\s+/) : value;
}

export function dsatContainersOfCompose(compose: ComposeFile, file: string): DsatContainer[] {
  return Object.entries(compose.services)
    .filter(([, s]) => DSAT_IMAGE.test(s.image ?? ''))
    .map(([name, s]) => ({
      where: `${file} service ${name}`,
      args: dsatArgs([s.entrypoint ?? [], s.command ?? []].flatMap(composeWords)),
      env: Object.keys(composeEnvironment(s)),
    }));
}

/**
 * What a container sets that its service does not read: a DSAT_* variable or a flag that is not
 * in the service's spec (any spec for a command that is not a service), or a variable that is
 * neither DSAT_* nor a standard OTEL_* one. An empty list means every name is real.
 */
export function configProblems(containers: readonly DsatContainer[]): string[] {
  const specs = configSpecs();
  const all = { env: new Set<string>(), flags: new Set<string>() };
  for (const spec of specs.values()) {
    const n = specNames(spec);
    n.env.forEach((e) => all.env.add(e));
    n.flags.forEach((f) => all.flags.add(f));
  }
  const problems: string[] = [];
  for (const c of containers) {
    const service = c.args[0];
    const spec = service === undefined ? undefined : specs.get(service);
    const names = spec ? specNames(spec) : all;
    const whose = spec ? `the ${service} service` : 'any dsat service';
    for (const name of c.env) {
      if (name.startsWith('OTEL_')) continue;
      if (!name.startsWith('DSAT_')) {
        problems.push(`${c.where}: ${name} is neither a DSAT_* nor an OTEL_* variable`);
      } else if (!names.env.has(name)) {
        problems.push(`${c.where}: ${name} is not a variable of ${whose}`);
      }
    }
    for (const arg of c.args.slice(1)) {
      const flag = arg.split('=')[0]!;
      if (flag.startsWith('--') && !names.flags.has(flag)) {
        problems.push(`${c.where}: ${flag} is not a flag of ${whose}`);
      }
    }
  }
  return problems;
}

/** Every DSAT_* name written anywhere in these files, with where it was seen. */
export function dsatNamesIn(files: readonly string[]): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\bDSAT_[A-Z0-9_]*[A-Z0-9]\b/g)) {
      const list = seen.get(m[0]) ?? [];
      list.push(path.relative(REPO_ROOT, file));
      seen.set(m[0], list);
    }
  }
  return seen;
}

/** The files under a directory, recursively. */
export function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : [p];
  });
}
