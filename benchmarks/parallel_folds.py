"""Wall time of one CV run with its folds in sequence against `cv.workers=N` fold workers, same config, same data,
with the parallel efficiency (sequential time / (N x parallel time)) and whether the CV KLs agree.

    python benchmarks/parallel_folds.py                       # the 1D CNN, 4 folds, 2 workers, on a generated set
    python benchmarks/parallel_folds.py --workers 4 --folds 4 --epochs 3 -- trainer.backend=jax

Each run is a fresh `python -m hms.train` process in its own store; the feature caches are built once before either
is timed (a warm-up run of one fold), so both times are training, recording and process start-up.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def train(args, root, cache, store, *extra):
    command = [sys.executable, "-m", "hms.train", "input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "data=kaggle",
               f"data.root={root}", f"data.cache_dir={cache}", f"paths.root={store}", f"cv.folds={args.folds}",
               f"trainer.epochs={args.epochs}", "trainer.verbose=0", "tracking.system_metrics=null", *args.overrides, *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=store, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    kl = re.findall(r"cv_kl (\d+\.\d+)", done.stdout + done.stderr)
    return seconds, float(kl[-1]) if kl else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eegs", type=int, default=120)
    parser.add_argument("overrides", nargs="*", help="more hms.train overrides (after --)")
    args = parser.parse_args()
    from hms.synthetic import SynthSpec, generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, cache = tmp / "data", tmp / "cache"
        generate(root, SynthSpec(eegs=args.eegs, patients=max(args.folds * 2, args.eegs // 6), seed=11, test_eegs=4))
        for name in ("warm", "sequential", "parallel"):
            (tmp / name).mkdir()
        train(args, root, cache, tmp / "warm", "cv.only=[0]", "trainer.epochs=1")
        sequential, kl_s = train(args, root, cache, tmp / "sequential")
        parallel, kl_p = train(args, root, cache, tmp / "parallel", f"cv.workers={args.workers}")
    print(f"{os.cpu_count()} CPU cores; 1D CNN, {args.folds} folds x {args.epochs} epochs on {args.eegs} eeg_ids")
    print("| run | wall s | cv_kl |")
    print("| --- | --- | --- |")
    print(f"| sequential | {sequential:.1f} | {kl_s:.4f} |")
    print(f"| cv.workers={args.workers} | {parallel:.1f} | {kl_p:.4f} |")
    print(f"speed-up {sequential / parallel:.2f}x, efficiency {sequential / (args.workers * parallel):.2f} "
          f"(1.00: {args.workers} workers each as fast as one alone)")


if __name__ == "__main__":
    main()
