#!/usr/bin/env bash
# Drift check: gen/ must equal what `buf generate` makes from proto/ right now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PATH="$PWD/node_modules/.bin:$PATH" buf generate --output "$tmp"
buf build -o "$tmp/gen/dsat.binpb"
if ! diff -r gen "$tmp/gen" >"$tmp/diff.txt"; then
  echo "gen/ differs from what buf generate makes from proto/ (run npm run gen and commit):" >&2
  head -40 "$tmp/diff.txt" >&2
  exit 1
fi
echo "gen/ matches proto/"
