"""Harness: N generated invalid command lines over every command, each run in process on a fresh
folder holding pre-existing outputs; prints each case that is not clean (exit 2, one stderr line
naming the value, no traceback, no hang, outputs byte-identical, no temporary file left) and the
share that is. The generators are the test suite's (tests/bad_inputs.py), unbounded here.

Run: python benchmarks/bad_inputs.py [N=1000] [SEED=13]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bad_inputs import main  # noqa: E402

if __name__ == "__main__":
    main()
