"""`python -m hms.data check DIR`: print counts, list every bad file, exit 1 if any (library: `hms.dataset.check`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import logs
from ..dataset.check import check_folder


def main(argv=None) -> int:
    logs.install()
    parser = argparse.ArgumentParser(prog="python -m hms.data", description="Validate a Kaggle-layout folder file by file.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a Kaggle-layout folder file by file")
    check.add_argument("dir", type=Path)
    check.add_argument("--workers", type=int, default=None, help="processes reading files (default: all cores)")
    args = parser.parse_args(argv)
    report = check_folder(args.dir, workers=args.workers)
    for line in report.lines:
        print(line)
    if report.bad:
        print(f"{len(report.bad)} bad file(s):")
        for path, reason in sorted(report.bad.items()):
            print(f"  {path}: {reason}")
        return 1
    print(f"{args.dir}: all files OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
