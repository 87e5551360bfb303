"""The one base of uscl's data models (specs, laws, runs, results).

Frozen, so a validated model is never mutated (and can be hashed and cached), and strict about
keys (``extra="forbid"``), so a typo in a spec or a file is an error, never silently dropped.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
