#!/usr/bin/env bash
# Compiles the TypeScript to dist/ (CommonJS), which bin/dsat.js runs instead of the sources
# while it is newer than every source file: half the start-up CPU and ~35 MB less per process.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
node_modules/.bin/tsc -p tsconfig.build.json
mkdir -p dist/gen dist/deploy/k8s/pipelines
cp gen/dsat.binpb dist/gen/
cp deploy/demo-handlers.js dist/deploy/
cp deploy/k8s/pipelines/demo.yaml dist/deploy/k8s/pipelines/
date -u +%FT%TZ > dist/BUILT
echo "built dist/"
