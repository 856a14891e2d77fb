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
  "hms/oof.py:tests/test_oof.py"
  "hms/blending.py:tests/test_blending.py"
)
# hms/features/eeg.py has 692 mutants at about 10 s each here; a sample:
#   HMS_MUTATE_SAMPLE=120 HMS_MUTATE="hms/features/eeg.py:tests/features/test_spectrograms.py" tools/mutation.sh
[ -n "${HMS_MUTATE:-}" ] && read -r -a MODULES <<< "$HMS_MUTATE"  # e.g. HMS_MUTATE="hms/schedule.py:tests/test_schedule.py"
# HMS_MUTATE_SAMPLE=N: run a random N of each module's mutants (seeded, so a rerun draws the same ones) where
# all of them would take too long; the report then says it is a sample and gives the interval of the kill rate.
export HMS_MUTATE_SAMPLE="${HMS_MUTATE_SAMPLE:-}"
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
  if [ -n "$HMS_MUTATE_SAMPLE" ]; then
    python3 - session.sqlite "$HMS_MUTATE_SAMPLE" <<'PY'
import random, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
jobs = sorted(row[0] for row in db.execute("select job_id from work_items"))
drop = [(j,) for j in set(jobs) - set(random.Random(0).sample(jobs, min(int(sys.argv[2]), len(jobs))))]
db.executemany("delete from mutation_specs where job_id = ?", drop)
db.executemany("delete from work_items where job_id = ?", drop)
db.execute("create table if not exists hms_sample (population integer)")
db.execute("insert into hms_sample values (?)", (len(jobs),))
db.commit()
PY
  fi
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
population = db.execute("select population from hms_sample").fetchone()[0] if db.execute(
    "select 1 from sqlite_master where name = 'hms_sample'").fetchone() else len(rows)
for outcome, diff in rows:
    if outcome == "SURVIVED":  # the changed lines of each survivor
        print("   survived:", " => ".join(l[1:].strip() for l in diff.splitlines()
                                       if l[:1] in "+-" and not l.startswith(("+++", "---"))), file=sys.stderr)
print(len(rows), sum(outcome == "SURVIVED" for outcome, _ in rows), population)
PY
  )
  read -r jobs_n alive population <<< "$counts"
  total=$((total + jobs_n)); survived=$((survived + alive))
  sample=""
  if [ "$population" -gt "$jobs_n" ]; then  # a random sample: the kill rate's 95% Wilson interval for all of them
    sample=$(python3 -c "
import math; n, k, z = $jobs_n, $jobs_n - $alive, 1.96
p = k / n; c = (p + z * z / (2 * n)) / (1 + z * z / n); h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
print(f', a random sample of $population mutants: {100 * (c - h):.0f}-{100 * (c + h):.0f}% of all would be killed (95%)')")
  fi
  echo "== ${entry%%:*} (tests: ${entry#*:}): $((jobs_n - alive)) of $jobs_n mutants killed$sample"
done
echo "all modules: $((total - survived)) of $total mutants killed ($(awk "BEGIN {printf \"%.1f\", 100 * ($total - $survived) / ($total ? $total : 1)}")%)"
