"""A fixed budget of sweep trials with no pruner, the median pruner and the Wilcoxon pruner: fold-trainings
spent and best value found.

    python benchmarks/sweep_pruning.py [--trials 8] [--folds 5] [--eegs 200]

The studies use the same sampler seed, so they propose the same configurations in the same order
(a pruner only stops trials, it does not change what the random sampler proposes); each trial is a
real tiny `hms.train` CV run on a synthetic dataset made here. The median pruner compares the running
mean KL with the other trials' at the same fold count; the Wilcoxon pruner pairs each fold's KL with
the best trial's same fold, and can only say "worse" once enough folds are in (a one-sided p below 0.1
needs 4 folds), so it needs --folds 4 or more to prune at all.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

SPACE = """
study: {study}
direction: minimize
sampler: {{name: random, seed: 0}}
pruner: {pruner}
base: ["input.tile=[16,32]", trainer.epochs=2, cv.folds={folds}, "schedule.steps=[[0,1.0e-3],[0.5,3.0e-4]]",
       trainer.batch_size=16, trainer.verbose=0]
params:
  backbone: {{type: categorical, choices: [efficientnet_b0, efficientnet_b1]}}
  schedule.steps: {{type: categorical, choices: ["[[0,1.0e-3],[0.5,3.0e-4]]", "[[0,1.0e-5]]", "[[0,3.0e-3],[0.5,1.0e-3]]"]}}
  augmentation: {{type: categorical, choices: [none, hemisphere]}}
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--eegs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "hms.synth", tmp / "data", "--eegs", str(args.eegs)], check=True, capture_output=True)
        results = {}
        for name, pruner in (("no pruning", "{name: none}"), ("median pruner", "{name: median, n_startup_trials: 2}"),
                             ("wilcoxon pruner", "{name: wilcoxon, p_threshold: 0.1, n_startup_steps: 2}")):
            study = name.replace(" ", "_")
            space = tmp / f"{study}.yaml"
            space.write_text(SPACE.format(study=study, pruner=pruner, folds=args.folds))
            storage = f"sqlite:///{tmp}/{study}.db"
            subprocess.run([sys.executable, "-m", "hms.sweep", "launch", str(space), "--trials", str(args.trials),
                            "--storage", storage, "--", "data=kaggle", f"data.root={tmp / 'data'}", "data.sampling=fixed",
                            f"data.cache_dir={tmp / 'cache'}", f"tracking.uri=sqlite:///{tmp}/mlflow.db"],
                           check=True, capture_output=True, cwd=tmp)
            trials = optuna.load_study(study_name=study, storage=storage).trials
            folds = sum(len(t.intermediate_values) for t in trials)
            complete = [t.value for t in trials if t.value is not None and t.state.name == "COMPLETE"]
            results[name] = (folds, min(complete))
            print(f"{name:15s}: {len(trials)} trials, {folds:3d} fold-trainings, best CV KL {min(complete):.4f}")
    base_folds, base_best = results["no pruning"]
    for name in ("median pruner", "wilcoxon pruner"):
        folds, best = results[name]
        print(f"{name}: saves {1 - folds / base_folds:.0%} of the fold-trainings; best value {best:.4f} vs {base_best:.4f}")


if __name__ == "__main__":
    main()
