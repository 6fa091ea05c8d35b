#!/usr/bin/env bash
# Reports breaking changes of proto/ against the previous commit. It never fails the build while
# the contracts are young; set DSAT_BREAKING_ENFORCE=1 to make it fail.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! git rev-parse --verify -q HEAD~1 >/dev/null; then
  echo "buf breaking: no previous commit to compare with (shallow or first commit); skipped"
  exit 0
fi
if ! git cat-file -e HEAD~1:proto 2>/dev/null; then
  echo "buf breaking: the previous commit has no proto/; skipped"
  exit 0
fi
out=$(buf breaking proto --against ".git#ref=HEAD~1,subdir=proto" 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
  echo "buf breaking: no breaking change against HEAD~1"
  exit 0
fi
echo "buf breaking: report against HEAD~1 (not enforced while the contracts are young):"
echo "$out"
[ "${DSAT_BREAKING_ENFORCE:-0}" = "1" ] && exit 1
exit 0
