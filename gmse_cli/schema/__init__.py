"""The JSON Schema of every command's ``--json`` output (``uscl-output.schema.json``, shipped)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["OUTPUT_SCHEMA_FILE", "output_schema"]

OUTPUT_SCHEMA_FILE = "uscl-output.schema.json"


@cache
def output_schema() -> dict[str, Any]:
    """The schema (draft 2020-12) that ``uscl COMMAND --json`` output validates against."""
    return json.loads((files(__name__) / OUTPUT_SCHEMA_FILE).read_text(encoding="utf-8"))
