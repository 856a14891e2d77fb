#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the core library modules, outside CI:
#   pip install -e ".[dev,mutation]" && tools/mutation.sh [--jobs 2]
# Each module is mutated one change at a time and its own quick tests (not marked slow) run against every mutant; a
# mutant no test notices survives. Works on a copy of the tracked files (cosmic-ray edits files in
# place), so the checkout is never touched. Prints every survivor and the share killed per module.
set -euo pipefail
jobs=2
[ "${1:-}" = "--jobs" ] && jobs="$2"
# module : the tests that cover it
MODULES=(
  "hms/metrics.py:tests/test_metrics.py"
  "hms/dataset/folds.py:tests/dataset/test_folds.py"
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
test-command = "python -m pytest -x -q -p no:xdist -p no:cacheprovider -o addopts= -m 'not slow' $tests"
[cosmic-ray.distributor]
name = "local"
TOML
  cd "$copy"
  export PYTHONPATH="$copy"  # the copy's hms, not the installed checkout
  cosmic-ray init cosmic-ray.toml session.sqlite
  cosmic-ray baseline cosmic-ray.toml > /dev/null
  cosmic-ray exec cosmic-ray.toml session.sqlite
}
export -f one
export work repo
printf '%s\n' "${MODULES[@]}" | tr ':' ' ' | xargs -P "$jobs" -L 1 bash -c 'one "$0" "$1"'

total=0 survived=0
for entry in "${MODULES[@]}"; do
  name="$(basename "${entry%%:*}" .py)"
  counts=$(python3 - "$work/$name/session.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select test_outcome, diff from work_results").fetchall()
for outcome, diff in rows:
    if outcome == "SURVIVED":  # the changed lines of each survivor
        print("   survived:", " => ".join(l[1:].strip() for l in diff.splitlines()
                                       if l[:1] in "+-" and not l.startswith(("+++", "---"))), file=sys.stderr)
print(len(rows), sum(outcome == "SURVIVED" for outcome, _ in rows))
PY
  )
  read -r jobs_n alive <<< "$counts"
  total=$((total + jobs_n)); survived=$((survived + alive))
  echo "== ${entry%%:*} (tests: ${entry#*:}): $((jobs_n - alive)) of $jobs_n mutants killed"
done
echo "all modules: $((total - survived)) of $total mutants killed ($(awk "BEGIN {printf \"%.1f\", 100 * ($total - $survived) / ($total ? $total : 1)}")%)"
