#!/usr/bin/env node
// Regenerates the JSON schemas in deploy/schemas/ that test/integration/deploy-manifests.test.ts
// checks the deploy files against, offline. Needs the npm registry, nothing else:
//
//   node scripts/vendor-schemas.mjs
//
// Kubernetes: kubernetes-models ships the schema of every Kubernetes 1.27 type as a small module
// that registers it; we load them with a stub registry, keep the types reachable from the kinds
// below, and make them strict (an unknown field is an error, as `kubeconform -strict` does).
// Compose: dclint ships the compose-spec schema; we copy it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import prettier from 'prettier';

const KUBERNETES_MODELS = { name: 'kubernetes-models', version: '4.3.1', kubernetes: '1.27.1' };
const APIMACHINERY = { name: '@kubernetes-models/apimachinery', version: '1.2.2' };
const DCLINT = { name: 'dclint', version: '3.1.0' };

/** The kinds the deploy files may use, by apiVersion. */
const KINDS = {
  v1: ['ConfigMap', 'Namespace', 'PersistentVolumeClaim', 'Secret', 'Service', 'ServiceAccount'],
  'apps/v1': ['Deployment', 'StatefulSet'],
  'autoscaling/v2': ['HorizontalPodAutoscaler'],
  'batch/v1': ['CronJob', 'Job'],
  'networking.k8s.io/v1': ['NetworkPolicy'],
  'policy/v1': ['PodDisruptionBudget'],
};

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'deploy/schemas');

/** Downloads a package with `npm pack` and unpacks it as tmp/node_modules/<name>. */
function unpack(tmp, pkg) {
  const [info] = JSON.parse(
    execFileSync(
      'npm',
      ['pack', `${pkg.name}@${pkg.version}`, '--json', '--pack-destination', tmp],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    ),
  );
  const dir = path.join(tmp, 'node_modules', pkg.name);
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['xzf', path.join(tmp, info.filename), '-C', dir, '--strip-components=1']);
  return dir;
}

/** Every schema the packages register, by id (`io.k8s.api.apps.v1.Deployment`). */
function loadKubernetesSchemas(tmp, dirs) {
  const registered = new Map();
  const stub = path.join(tmp, 'node_modules/@kubernetes-models/validate');
  fs.mkdirSync(stub, { recursive: true });
  fs.writeFileSync(
    path.join(stub, 'index.js'),
    'exports.register = (id, schema) => globalThis.registerKubernetesSchema(id, schema);\n',
  );
  globalThis.registerKubernetesSchema = (id, schema) => registered.set(id, schema);
  const require = createRequire(path.join(tmp, 'index.js'));
  for (const dir of dirs) {
    const schemas = path.join(dir, '_schemas');
    for (const file of fs.readdirSync(schemas).filter((f) => f.endsWith('.js'))) {
      require(path.join(schemas, file)).addSchema();
    }
  }
  return registered;
}

const isNullType = (s) => s && s.type === 'null' && Object.keys(s).length === 1;

/**
 * Rewrites one kubernetes-models schema for the manifests we write: references point into
 * `definitions`, null is not a value (an empty `env:` is a mistake), and objects with declared
 * properties refuse any other.
 */
function strict(schema) {
  if (Array.isArray(schema)) return schema.map(strict);
  if (!schema || typeof schema !== 'object') return schema;
  const alternatives = schema.oneOf;
  if (Array.isArray(alternatives) && alternatives.length === 2 && alternatives.some(isNullType)) {
    const { oneOf: _, ...rest } = schema;
    return strict({ ...rest, ...alternatives.find((s) => !isNullType(s)) });
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'nullable') continue;
    if (key === '$ref') out.$ref = `#/definitions/${value.replace(/#$/, '')}`;
    else if (key === 'properties') {
      out.properties = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, strict(v)]));
    } else out[key] = strict(value);
  }
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

function kubernetesSchema(registered) {
  const kinds = {};
  const roots = [];
  for (const [apiVersion, names] of Object.entries(KINDS)) {
    for (const kind of names) {
      const id = [...registered.keys()].find((candidate) => {
        const p = registered.get(candidate).properties;
        return p?.apiVersion?.enum?.[0] === apiVersion && p?.kind?.enum?.[0] === kind;
      });
      if (!id) throw new Error(`no schema for ${apiVersion} ${kind}`);
      kinds[`${apiVersion}/${kind}`] = id;
      roots.push(id);
    }
  }
  const definitions = {};
  const queue = [...roots];
  while (queue.length > 0) {
    const id = queue.shift();
    if (definitions[id]) continue;
    const schema = registered.get(id);
    if (!schema) throw new Error(`unknown schema ${id}`);
    definitions[id] = strict(schema);
    JSON.stringify(definitions[id], (key, value) => {
      if (key === '$ref') queue.push(value.replace('#/definitions/', ''));
      return value;
    });
  }
  const sorted = Object.fromEntries(
    Object.keys(definitions)
      .sort()
      .map((k) => [k, definitions[k]]),
  );
  return {
    $comment:
      `Generated by scripts/vendor-schemas.mjs from ${KUBERNETES_MODELS.name}@${KUBERNETES_MODELS.version} ` +
      `and ${APIMACHINERY.name}@${APIMACHINERY.version} (MIT; derived from the Kubernetes ` +
      `${KUBERNETES_MODELS.kubernetes} OpenAPI, Apache-2.0). Strict: unknown fields are errors. Do not edit.`,
    $schema: 'http://json-schema.org/draft-07/schema#',
    kubernetesVersion: KUBERNETES_MODELS.kubernetes,
    kinds,
    definitions: sorted,
  };
}

function composeSchema(dclintDir) {
  const schema = JSON.parse(
    fs.readFileSync(path.join(dclintDir, 'schemas/compose.schema.json'), 'utf8'),
  );
  return {
    $comment:
      `Generated by scripts/vendor-schemas.mjs: the compose-spec schema (Apache-2.0) as bundled ` +
      `by ${DCLINT.name}@${DCLINT.version}. Do not edit.`,
    ...schema,
    // The draft-07 meta-schema under the URI JSON schema validators know it by.
    $schema: 'http://json-schema.org/draft-07/schema#',
  };
}

async function write(file, data) {
  const target = path.join(OUT, file);
  const options = { ...(await prettier.resolveConfig(target)), filepath: target };
  fs.writeFileSync(target, await prettier.format(JSON.stringify(data), options));
  process.stdout.write(`wrote ${path.relative(ROOT, target)}\n`);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-schemas-'));
try {
  const models = unpack(tmp, KUBERNETES_MODELS);
  const apimachinery = unpack(tmp, APIMACHINERY);
  const dclint = unpack(tmp, DCLINT);
  fs.mkdirSync(OUT, { recursive: true });
  await write(
    'kubernetes.json',
    kubernetesSchema(loadKubernetesSchemas(tmp, [apimachinery, models])),
  );
  await write('compose-spec.json', composeSchema(dclint));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
