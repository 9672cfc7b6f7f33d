#!/usr/bin/env python3
"""The longer fuzz run: tests/test_fuzz.py with many more examples per property, and
hypothesis's statistics (how many inputs each property's decoder or Preprocessor accepted and
refused, and what was broken in the ones built to be refused).

    .venv/bin/python bench/fuzz.py [--scale 20] [pytest options ...]

The properties live in the test module only; this runs them through pytest (it imports
nothing from tests/). A finding is a failing property: hypothesis shrinks it to a small input
and prints it (make it a corpus entry in tests/test_limits.py). Exit code: pytest's (1 when
anything was found).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests" / "test_fuzz.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=20, help="examples per property: this times the default run's")
    args, pytest_args = ap.parse_known_args()
    if args.scale <= 0:
        ap.error("--scale must be > 0")
    env = {**os.environ, "STREAMPI_FUZZ_SCALE": str(args.scale)}
    cmd = [sys.executable, "-m", "pytest", str(TESTS), "-q", "-p", "no:cacheprovider",
           "--hypothesis-show-statistics", *pytest_args]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
