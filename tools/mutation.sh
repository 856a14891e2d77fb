#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the core library modules, outside CI:
#   pip install -e ".[dev,mutation]" && tools/mutation.sh [--jobs 2]
# Each module is mutated one change at a time and its own fast tests run against every mutant; a
# mutant no test notices survives. Works on a copy of the tracked files (cosmic-ray edits files in
# place), so the checkout is never touched. Prints every survivor and the share killed per module.
set -euo pipefail
jobs=2
[ "${1:-}" = "--jobs" ] && jobs="$2"
# module : the tests that cover it
MODULES=(
  "hms/metrics.py:tests/test_metrics.py"
  "hms/data/folds.py:tests/data/test_folds.py"
  "hms/baselines.py:tests/test_baselines.py"
)
[ -n "${HMS_MUTATE:-}" ] && read -r -a MODULES <<< "$HMS_MUTATE"  # e.g. HMS_MUTATE="hms/schedule.py:tests/test_schedule.py"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HMS_SHARED="${HMS_SHARED:-$repo/../shared}"

one() {  # module tests: mutate in a copy of its own, so modules run side by side
  local module="$1" tests="$2" name copy
  name="$(basename "$module" .py)"
  copy="$work/$name"
  mkdir -p "$copy"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$copy")
  cat > "$copy/cosmic-ray.toml" <<TOML
[cosmic-ray]
module-path = "$module"
timeout = 300.0
excluded-modules = []
test-command = "python -m pytest -x -q -p no:xdist -p no:cacheprovider -o addopts= $tests"
[cosmic-ray.distributor]
name = "local"
TOML
  cd "$copy"
  export PYTHONPATH="$copy"  # the copy's hms, not the installed checkout
  cosmic-ray init cosmic-ray.toml session.sqlite
  cosmic-ray baseline cosmic-ray.toml > /dev/null
  cosmic-ray exec cosmic-ray.toml session.sqlite
  cr-report session.sqlite > report.txt
}
export -f one
export work repo
printf '%s\n' "${MODULES[@]}" | tr ':' ' ' | xargs -P "$jobs" -L 1 bash -c 'one "$0" "$1"'

total=0 survived=0
for entry in "${MODULES[@]}"; do
  name="$(basename "${entry%%:*}" .py)"
  report="$work/$name/report.txt"
  echo "== ${entry%%:*} (tests: ${entry#*:})"
  grep -B2 -A14 "test outcome: TestOutcome.SURVIVED" "$report" | grep -v "^\[job-id\]\|worker outcome\|test outcome" || true
  jobs_n=$(grep -c "test outcome:" "$report" || true)
  alive=$(grep -c "test outcome: TestOutcome.SURVIVED" "$report" || true)
  total=$((total + jobs_n)); survived=$((survived + alive))
  echo "   $((jobs_n - alive)) of $jobs_n mutants killed"
done
echo "all modules: $((total - survived)) of $total mutants killed ($(awk "BEGIN {printf \"%.1f\", 100 * ($total - $survived) / ($total ? $total : 1)}")%)"
