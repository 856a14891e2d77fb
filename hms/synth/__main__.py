"""`python -m hms.synth OUT_DIR [--eegs N] [--patients P] [--seed S] [--signal A] [--recordings R] [--extra-seconds E]`: write a synthetic dataset."""

import argparse
import json
import sys

from .. import logs
from ..synthetic import SynthSpec, generate


def main(argv=None) -> int:
    logs.install()
    parser = argparse.ArgumentParser(prog="python -m hms.synth", description="Write a synthetic HMS dataset in Kaggle's layout.")
    parser.add_argument("out_dir")
    parser.add_argument("--eegs", type=int, default=SynthSpec.eegs, help="training eeg_ids")
    parser.add_argument("--patients", type=int, default=None, help="training patients (default: eegs / 5)")
    parser.add_argument("--test-eegs", type=int, default=None, help="test eeg_ids (default: eegs / 10, at least 8)")
    parser.add_argument("--seed", type=int, default=SynthSpec.seed)
    parser.add_argument("--signal", type=float, default=SynthSpec.signal,
                        help="amplitude of the class patterns over the background (default 1.0; lower is harder)")
    parser.add_argument("--recordings", type=int, default=None,
                        help="spectrogram_ids, each one continuous recording that its eeg_ids are cut from (default: eegs / 5)")
    parser.add_argument("--extra-seconds", type=int, default=SynthSpec.extra_seconds,
                        help="each EEG lasts 50 s plus up to this many seconds (even; default 22): more labelled windows per eeg_id")
    args = parser.parse_args(argv)
    spec = SynthSpec(eegs=args.eegs, patients=args.patients or max(1, args.eegs // 5), seed=args.seed, test_eegs=args.test_eegs,
                     signal=args.signal, recordings=args.recordings, extra_seconds=args.extra_seconds)
    meta = generate(args.out_dir, spec, progress=True)
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
