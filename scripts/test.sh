#!/usr/bin/env bash
# The one command CI runs: checks, then every test suite. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
results=.test-results
rm -rf "$results" && mkdir -p "$results"
check_pass=0
check_fail=0
failed_checks=()

check() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    check_pass=$((check_pass + 1))
  else
    check_fail=$((check_fail + 1))
    failed_checks+=("$name")
  fi
}

# kubectl renders deploy/k8s (test/integration/deploy-manifests.test.ts); protoc, its gRPC Python
# plugin, grpcio and protobuf generate and run examples/python (test/integration/python-worker.test.ts);
# ip (iproute2) makes the network namespaces of the partition and nemesis tests; faketime skews
# the wall clock of a tracker and a worker (test/integration/tracker/tracker-faketime.test.ts).
check "test set-up" bash scripts/test-setup.sh faketime --if-missing kubectl kubernetes-client \
  --if-missing ip iproute2 \
  protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf
check "buf lint" buf lint
check "generated code drift" bash scripts/check-gen.sh
check "buf breaking (report)" bash scripts/check-breaking.sh
check "tsc" tsc --noEmit -p .
check "eslint" eslint . --max-warnings 0
check "prettier" prettier --check . --log-level warn

echo "== jest"
# The OTLP exporters load http with a dynamic import(), which jest runs only with VM modules.
NODE_OPTIONS="--experimental-vm-modules --no-warnings=ExperimentalWarning ${NODE_OPTIONS:-}" jest --ci --json --outputFile="$results/jest.json" "$@"
jest_rc=$?

summary=$(node -e '
  const fs = require("fs");
  let r = { numPassedTests: 0, numFailedTests: 0, numRuntimeErrorTestSuites: 0 };
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { r.numRuntimeErrorTestSuites = 1; }
  const failed = r.numFailedTests + r.numRuntimeErrorTestSuites;
  console.log(`${r.numPassedTests} ${failed}`);
' "$results/jest.json")
read -r jest_pass jest_fail <<<"$summary"
if [ "$jest_rc" -ne 0 ] && [ "$jest_fail" -eq 0 ]; then jest_fail=1; fi

((${#failed_checks[@]})) && echo "failed checks: ${failed_checks[*]}"
passed=$((jest_pass + check_pass))
failed=$((jest_fail + check_fail))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
