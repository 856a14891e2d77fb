#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the core modules listed in tools/mutation.toml, outside CI:
#   tools/mutation.sh            # prints the survivors and the share of mutants killed
# It copies the tracked files to a temporary folder and mutates them there, so the checkout is never touched.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work")
cd "$work"
export HMS_SHARED="${HMS_SHARED:-$repo/../shared}"
export PYTHONPATH="$work"  # the copy's hms, also in subprocesses, not the installed checkout
cosmic-ray init tools/mutation.toml session.sqlite
cosmic-ray baseline tools/mutation.toml
cosmic-ray exec tools/mutation.toml session.sqlite
cr-report --show-pending session.sqlite | grep -v "^\[job-id\]" | grep -B1 -A12 "SURVIVED" || true
cr-rate session.sqlite | tail -1 | awk '{printf "mutants surviving: %s%%\n", $0}'
