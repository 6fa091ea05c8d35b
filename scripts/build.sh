#!/usr/bin/env bash
# Compiles the TypeScript to dist/ (CommonJS), which bin/dsat.js runs instead of the sources
# while it is newer than every source file: half the start-up CPU and ~35 MB less per process.
# Usage: build.sh [OUT_DIR]  (default: dist; another directory must be inside the repository,
# so that node_modules resolves)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
# BUILT goes first and comes last, so bin/dsat.js never runs a half-written dist/.
rm -f "$out/BUILT"
rm -rf "$out"
node_modules/.bin/tsc -p tsconfig.build.json --outDir "$out"
mkdir -p "$out/gen" "$out/deploy/k8s/pipelines"
cp gen/dsat.binpb "$out/gen/"
cp deploy/demo-handlers.js "$out/deploy/"
cp deploy/k8s/pipelines/demo.yaml "$out/deploy/k8s/pipelines/"
date -u +%FT%TZ >"$out/BUILT"
echo "built $out/"
