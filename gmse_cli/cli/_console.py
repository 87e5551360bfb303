"""Consoles shared by every command: data to stdout, messages and progress to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["out_console", "err_console", "print_json"]

# Rich respects NO_COLOR by itself; soft_wrap keeps data lines unbroken when piped.
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Write ``payload`` (plain data: dicts, lists, numbers) as JSON to stdout and nothing else."""
    sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()
