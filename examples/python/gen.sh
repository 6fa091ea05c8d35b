#!/usr/bin/env bash
# Generates the Python stubs of every dsat contract from proto/ into examples/python/gen/:
# *_pb2.py (messages), *_pb2_grpc.py (service stubs) and *_pb2.pyi (types for editors).
# Uses protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc), installed
# with apt-get when missing; falls back to `python3 -m grpc_tools.protoc` (pip: grpcio-tools).
# The generated code needs only grpcio and protobuf at run time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/gen"
python="${PYTHON:-python3}"
packages=(protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf)

if ! command -v protoc >/dev/null || ! command -v grpc_python_plugin >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    bash "$root/scripts/test-setup.sh" "${packages[@]}"
  fi
fi

mapfile -t protos < <(cd "$root/proto" && find dsat -name '*.proto' | LC_ALL=C sort)
# Generate next to the target and swap it in, so a reader never sees a half-written gen/.
tmp="$(mktemp -d "$here/.gen.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if command -v protoc >/dev/null && command -v grpc_python_plugin >/dev/null; then
  protoc -I "$root/proto" \
    --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
    --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
    "${protos[@]}"
elif "$python" -c 'import grpc_tools.protoc' 2>/dev/null; then
  "$python" -m grpc_tools.protoc -I "$root/proto" \
    --python_out="$tmp" --grpc_python_out="$tmp" \
    "${protos[@]}"
else
  echo "gen.sh: need protoc and grpc_python_plugin (Debian: apt-get install ${packages[*]})," >&2
  echo "        or grpcio-tools for $python (pip install grpcio-tools)" >&2
  exit 1
fi
# Make every directory a regular package, so `import dsat.router.v1.router_pb2` works on any
# Python 3 without relying on namespace packages.
find "$tmp" -type d -exec touch {}/__init__.py \;
rm -f "$tmp/__init__.py"
rm -rf "$out.old"
[ -d "$out" ] && mv "$out" "$out.old"
mv "$tmp" "$out"
rm -rf "$out.old"
echo "generated ${#protos[@]} contracts into ${out#"$root"/}"
