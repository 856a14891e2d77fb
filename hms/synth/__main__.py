"""`python -m hms.synth OUT_DIR [--eegs N] [--patients P] [--seed S] [--signal A]`: write a synthetic dataset."""

import argparse
import json
import sys

from ..synthetic import SynthSpec, generate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hms.synth", description="Write a synthetic HMS dataset in Kaggle's layout.")
    parser.add_argument("out_dir")
    parser.add_argument("--eegs", type=int, default=SynthSpec.eegs, help="training eeg_ids")
    parser.add_argument("--patients", type=int, default=None, help="training patients (default: eegs / 5)")
    parser.add_argument("--test-eegs", type=int, default=None, help="test eeg_ids (default: eegs / 10, at least 8)")
    parser.add_argument("--seed", type=int, default=SynthSpec.seed)
    parser.add_argument("--signal", type=float, default=SynthSpec.signal,
                        help="amplitude of the class patterns over the background (default 1.0; lower is harder)")
    args = parser.parse_args(argv)
    spec = SynthSpec(eegs=args.eegs, patients=args.patients or max(1, args.eegs // 5), seed=args.seed, test_eegs=args.test_eegs,
                     signal=args.signal)
    meta = generate(args.out_dir, spec, progress=True)
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
