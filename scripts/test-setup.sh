#!/usr/bin/env bash
# Installs what the tests need beyond npm packages, only when it is missing.
#   test-setup.sh PACKAGE...                      a Debian package, unless it is installed
#   test-setup.sh --if-missing COMMAND PACKAGE    PACKAGE, unless COMMAND is on PATH already
# The second form is for tools a machine may have from elsewhere: kubectl often comes with the
# image (its package clashes with Debian's kubernetes-client), and any kubectl will do.
set -euo pipefail
need=()
while (($#)); do
  if [[ $1 == --if-missing ]]; then
    (($# >= 3)) || { echo "usage: $0 [--if-missing COMMAND] PACKAGE..." >&2; exit 2; }
    command -v "$2" >/dev/null 2>&1 || need+=("$3")
    shift 3
  else
    dpkg -s "$1" >/dev/null 2>&1 || need+=("$1")
    shift
  fi
done
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "test set-up done"
