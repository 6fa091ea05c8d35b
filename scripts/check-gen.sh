#!/usr/bin/env bash
# Drift check: gen/ must equal what `buf generate` makes from proto/ right now.
# Usage: check-gen.sh [GEN_DIR]  (default: gen)
set -euo pipefail
cd "$(dirname "$0")/.."
committed=${1:-gen}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PATH="$PWD/node_modules/.bin:$PATH"
buf generate --output "$tmp"
buf build -o "$tmp/gen/dsat.binpb"
if ! diff -r "$committed" "$tmp/gen" >"$tmp/diff.txt"; then
  echo "$committed differs from what buf generate makes from proto/ (run npm run gen and commit):" >&2
  head -40 "$tmp/diff.txt" >&2
  exit 1
fi
echo "$committed matches proto/"
