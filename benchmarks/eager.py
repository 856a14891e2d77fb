"""When does tracing the training step pay for itself? `trainer.eager=auto` runs a short run's steps eagerly (no
graph) and a long run's traced: this prints, per model, the fixed cost and the per-step cost of each way and the
step count where they break even, which is where auto's threshold (`hms.cv.EAGER_STEPS`) should sit.

    python benchmarks/eager.py                                     # B0, B2 and the 1D CNN at a test's tiny sizes
    python benchmarks/eager.py --backbones efficientnet_b0 --tile 64 128 --batch 32

Each measurement builds a fresh model (tracing is per model), compiles it as a run does, and times `fit` over
`short` and then `long` steps of random inputs of the model's own shapes, then `predict` once; fixed cost and per-step
cost are the line through the two points. Eager and traced runs compute the same numbers (a test checks a run's fold
KLs both ways), so this is a question of time only."""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed_fit(cfg, eager: bool, steps: int, batch: int) -> float:
    import keras
    import numpy as np

    from hms.cv import _compile
    from hms.representations import model_for

    keras.utils.set_random_seed(0)
    model = model_for(cfg, steps_per_epoch=steps)
    _compile(model, 1e-3, eager=eager)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(steps * batch, *i.shape[1:])).astype("float32") for i in model.inputs]
    y = rng.dirichlet(np.ones(6), size=steps * batch).astype("float32")
    start = time.perf_counter()
    model.fit(x if len(x) > 1 else x[0], y, batch_size=batch, epochs=1, verbose=0)
    model.predict(x if len(x) > 1 else x[0], batch_size=batch, verbose=0)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["eeg1d_cnn", "efficientnet_b0", "efficientnet_b2"])
    parser.add_argument("--tile", nargs=2, type=int, default=[16, 32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=22)
    args = parser.parse_args(argv)

    import keras

    from hms.config import compose

    print(f"backend {keras.backend.backend()}, tile {args.tile[0]}x{args.tile[1]}, batch {args.batch}, "
          f"fit of {args.short} and {args.long} steps plus one predict, on {os.cpu_count()} CPU(s)\n")
    print("| model | way | fixed s | s per step | break-even steps |")
    print("| --- | --- | --- | --- | --- |")
    for backbone in args.backbones:
        overrides = ([f"backbone={backbone}", "input=eeg1d", "input.signal.rate=20", "input.signal.high=8"] if "1d" in backbone
                     else [f"backbone={backbone}", f"input.tile=[{args.tile[0]},{args.tile[1]}]"])
        cfg = compose(overrides)
        lines = {}
        for eager in (False, True):
            short, long = (timed_fit(cfg, eager, n, args.batch) for n in (args.short, args.long))
            per_step = (long - short) / (args.long - args.short)
            lines[eager] = (short - per_step * args.short, per_step)
        (graph_fixed, graph_step), (eager_fixed, eager_step) = lines[False], lines[True]
        even = (graph_fixed - eager_fixed) / (eager_step - graph_step) if eager_step > graph_step else float("inf")
        for eager, (fixed, step) in lines.items():
            print(f"| {backbone} | {'eager' if eager else 'traced'} | {fixed:.2f} | {step:.3f} | "
                  f"{f'{even:.0f}' if eager else ''} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
