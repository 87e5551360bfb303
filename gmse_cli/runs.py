"""Training runs as data: one validated record per finished run, from any of three sources.

- :func:`load_train_jsonl` -- the JSON lines ``uscl train`` appends (one record per run).
- :func:`load_quest_runs` -- QuEST's published runs (``quest_runs.json``), each quantizer
  class mapped to the catalog scheme it implements.
- :func:`load_csv` -- a plain CSV with columns ``N, D, loss`` and optional ``weights`` /
  ``activations`` / ``scheme`` columns; the Chinchilla points (``Model Size``,
  ``Training FLOP``, ``loss``) load with ``D = FLOP / (6 N)``.

:func:`load_runs` picks the loader from the file. :func:`select` applies ``--where``
expressions (``w_bits=4``, ``scheme~had``, ``N>=1e8``) and :func:`exclude_worst` drops the K
highest-loss runs (Besiroglu et al. 2024 dropped 5 of the Chinchilla points this way).

A run's *scheme* pairs a weight format with an optional activation format, each named by a
spec string that :func:`~gmse_cli.spec.resolve_format` understands (catalog name or shorthand).
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Format, resolve_format

__all__ = [
    "Run",
    "MetaValue",
    "DENSE_FORMATS",
    "scheme_name",
    "tensor_bits",
    "load_runs",
    "load_train_jsonl",
    "load_quest_runs",
    "load_csv",
    "quest_scheme",
    "select",
    "parse_where",
    "exclude_worst",
    "RunsWarning",
]

MetaValue = str | int | float | bool | None

DENSE_FORMATS = frozenset({"bf16", "fp16", "fp32"})
"""Plain casts that count as the uncompressed reference (capacity 1 in a decoupled fit)."""


class RunsWarning(UserWarning):
    """A run was skipped while loading (diverged, unfinished)."""


def scheme_name(weights: str, activations: str | None) -> str:
    """The scheme's display name, as :attr:`gmse_cli.spec.Scheme.display_name` writes it."""
    return weights if activations is None else f"W:{weights} A:{activations}"


def tensor_bits(spec: str | None, fmt: Format | None = None) -> float:
    """Element bits of a tensor's format: the quantizer's bits, 16 for none or a sparse-only format."""
    if spec is None and fmt is None:
        return 16.0
    fmt = fmt if fmt is not None else resolve_format(spec)  # type: ignore[arg-type]
    quantizer = fmt.quantizer
    if quantizer is None:
        return 16.0
    return float(quantizer.element_bits) if hasattr(quantizer, "element_bits") else float(quantizer.bits)


class Run(BaseModel):
    """One finished training run: what was compressed, how big, how long, and the final loss."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: str = Field(description="scheme display name: 'int4' (weights only) or 'W:int4 A:int4'")
    weights: str = Field(description="weight format spec (catalog name or shorthand)")
    activations: str | None = Field(default=None, description="activation format spec; None = not compressed")
    N: float = Field(description="non-embedding parameters")
    D: float = Field(description="training tokens")
    loss: float = Field(description="final validation loss (nats per token)")
    source: str = Field(default="", description="file the run was read from")
    weights_spec: Format | None = Field(default=None, description="full weight format when given inline")
    activations_spec: Format | None = Field(default=None, description="full activation format when given inline")
    stage_gmse: tuple[tuple[str, float], ...] | None = Field(
        default=None, description="(family, GMSE) of each lossy stage, weights first, as the run recorded them"
    )
    meta: dict[str, MetaValue] = Field(default_factory=dict, description="anything else recorded")

    @model_validator(mode="after")
    def _check(self) -> Run:
        where = f" ({self.source})" if self.source else ""
        for key in ("N", "D"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise DataError(f"run '{self.scheme}'{where}: {key} = {value} must be a positive number")
        if not (math.isfinite(self.loss) and self.loss > 0):
            raise DataError(
                f"run '{self.scheme}'{where}: loss = {self.loss} must be a positive finite number "
                "(drop diverged runs before fitting)"
            )
        return self

    # -- derived ------------------------------------------------------------------------------

    def weight_format(self) -> Format:
        return self.weights_spec if self.weights_spec is not None else resolve_format(self.weights)

    def activation_format(self) -> Format | None:
        if self.activations_spec is not None:
            return self.activations_spec
        return None if self.activations is None else resolve_format(self.activations)

    @property
    def w_bits(self) -> float:
        """Weight element bits (16 when weights stay bf16)."""
        value = self.meta.get("w_bits")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return tensor_bits(self.weights, self.weights_spec)

    @property
    def a_bits(self) -> float:
        """Activation element bits (16 when activations are not compressed)."""
        value = self.meta.get("a_bits")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if self.activations is None and self.activations_spec is None:
            return 16.0
        return tensor_bits(self.activations, self.activations_spec)

    @property
    def tokens_per_param(self) -> float:
        return self.D / self.N

    @property
    def is_dense(self) -> bool:
        """Uncompressed: a plain 16/32-bit cast of the weights and no activation format."""
        return self.activations is None and self.weights in DENSE_FORMATS

    def field(self, key: str) -> Any:
        """The value ``--where`` compares for ``key`` (case-insensitive for the built-in keys)."""
        lowered = key.lower()
        builtin = {
            "scheme": self.scheme,
            "weights": self.weights,
            "activations": "none" if self.activations is None else self.activations,
            "n": self.N,
            "d": self.D,
            "loss": self.loss,
            "source": self.source,
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "tokens_per_param": self.tokens_per_param,
            "tpp": self.tokens_per_param,
        }
        if lowered in builtin:
            return builtin[lowered]
        if key in self.meta:
            return self.meta[key]
        raise KeyError(key)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Load runs from one or more files, choosing the loader by content.

    ``.csv`` -> :func:`load_csv`; a JSON list of QuEST records -> :func:`load_quest_runs`;
    anything else is read as ``uscl train`` JSON lines.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    runs: list[Run] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"runs file {path} does not exist")
        if path.suffix.lower() == ".csv":
            runs.extend(load_csv(path))
            continue
        head = _read_text(path).lstrip()[:1]
        if head == "[":
            runs.extend(load_quest_runs(path))
        else:
            runs.extend(load_train_jsonl(path))
    return runs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read runs file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"runs file {path} is not UTF-8 text") from None


# --------------------------------------------------------------------------------------------
# QuEST
# --------------------------------------------------------------------------------------------

_QUEST_NO_QUANT = "NoQuantizer"
_QUEST_PATTERN = re.compile(
    r"^(?P<rot>HalfHadamard|Hadamard)?(?P<kind>FourEightTrust|FP4Trust|Trust|Clip)Quantizer$"
)


def quest_scheme(quantizer: str, bits: int | float | None, *, tensor: str = "weights") -> str | None:
    """The catalog spec a QuEST quantizer class implements (None for ``NoQuantizer``).

    - ``TrustQuantizer`` / ``ClipQuantizer`` (B bits) -> ``intB``: the same RMS-scaled midrise
      grid; trust and clip only change which gradients pass, not the forward quantizer.
    - ``Hadamard...`` / ``HalfHadamard...`` -> ``had128+...``: a 128-block Hadamard transform
      first (GMSE is unchanged; the rotation is kept in the name because it matters on real
      tensors). "Half" keeps the output in the rotated basis; the forward error is the same.
    - ``...FourEightTrust...`` -> ``2:4+int4``: QuEST zeroes the 2 smallest-norm pairs of every
      4 pairs (half the entries, 2:4 on pairs), then the kept values carry 4 bits.
    - ``...FP4Trust...`` -> ``fp4`` (E2M1 grid, RMS scale); its ``w_bits`` field reads 16.
    """
    if quantizer == _QUEST_NO_QUANT:
        return None
    match = _QUEST_PATTERN.match(quantizer or "")
    if match is None:
        raise DataError(
            f"QuEST {tensor} quantizer '{quantizer}' has no catalog mapping (known: NoQuantizer, "
            "[Half]Hadamard{Trust,Clip,FourEightTrust,FP4Trust}Quantizer, TrustQuantizer, ClipQuantizer)"
        )
    prefix = "had128+" if match["rot"] else ""
    kind = match["kind"]
    if kind == "FP4Trust":
        return prefix + "fp4"
    if bits is None or not float(bits).is_integer() or not 1 <= int(bits) <= 8:
        raise DataError(f"QuEST {tensor} quantizer '{quantizer}' with bits={bits}: expected 1..8 bits")
    if kind == "FourEightTrust":
        return f"{prefix}2:4+int{int(bits)}"
    return f"{prefix}int{int(bits)}"


def load_quest_runs(path: str | Path) -> list[Run]:
    """QuEST's ``runs_for_scaling.json``: a JSON list of run records (see shared/data/README.md)."""
    path = Path(path)
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of QuEST run records")
    runs = []
    for index, rec in enumerate(records):
        where = f"{path} record {index}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        missing = [k for k in ("non_embedding_parameters", "tokens", "loss", "w_quant", "a_quant") if k not in rec]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        weights = quest_scheme(rec["w_quant"], rec.get("w_bits"), tensor="weight")
        activations = quest_scheme(rec["a_quant"], rec.get("a_bits"), tensor="activation")
        weights = weights or "bf16"  # NoQuantizer on weights: the bf16 baseline
        args = rec.get("args") or {}
        meta: dict[str, MetaValue] = {
            "w_quant": rec["w_quant"],
            "a_quant": rec["a_quant"],
            "w_bits": rec.get("w_bits"),
            "a_bits": rec.get("a_bits"),
            "model_size": rec.get("model_size"),
            "clip_scale": rec.get("clip_scale"),
            "trust": rec.get("trust"),
            "seed": args.get("seed"),
            "lr": args.get("lr"),
            "n_layer": args.get("n_layer"),
            "n_embd": args.get("n_embd"),
            "iterations": args.get("iterations"),
        }
        if "FP4" in rec["w_quant"]:
            meta["w_bits"] = 4  # QuEST records 16 for its FP4 runs; the grid has 4 bits
        if "FP4" in rec["a_quant"]:
            meta["a_bits"] = 4
        if activations is None:
            meta["a_bits"] = 16
        runs.append(
            Run(
                scheme=scheme_name(weights, activations),
                weights=weights,
                activations=activations,
                N=_number(rec["non_embedding_parameters"], "non_embedding_parameters", where),
                D=_number(rec["tokens"], "tokens", where),
                loss=_number(rec["loss"], "loss", where),
                source=str(path),
                meta={k: v for k, v in meta.items() if v is not None},
            )
        )
    return runs


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: {key} = {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} = {value!r} is not a number") from None


# --------------------------------------------------------------------------------------------
# uscl train JSON lines
# --------------------------------------------------------------------------------------------

# Accepted spellings, first match wins: the training backend owns the schema, so the reader is
# liberal in the keys it recognizes and strict about what it needs.
_KEYS_N = ("N", "n_params", "params", "non_embedding_params", "non_embedding_parameters")
_KEYS_D = ("D", "tokens", "n_tokens", "train_tokens")
_KEYS_LOSS = ("loss", "final_val_loss", "val_loss", "validation_loss", "final_loss")
_KEYS_W = ("weights", "weight_format", "w_format", "weights_format")
_KEYS_A = ("activations", "activation_format", "a_format", "activations_format", "acts")
_OK_STATUS = {"ok", "done", "finished", "complete", "completed", "success", "succeeded"}
_SECTIONS = ("result", "results", "model", "scheme", "format", "formats", "config")


def _lookup(rec: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in rec:
            return rec[key]
    for section in _SECTIONS:
        sub = rec.get(section)
        if isinstance(sub, dict):
            for key in keys:
                if key in sub:
                    return sub[key]
    return None


def _format_field(value: Any, where: str, key: str) -> tuple[str | None, Format | None]:
    """A format given by name, or inline as a spec object -> (name, spec or None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None, None
    if isinstance(value, str):
        return value.strip(), None
    if isinstance(value, dict):
        if "stages" not in value and isinstance(value.get("name"), str):
            return value["name"], None
        try:
            fmt = Format.model_validate(value)
        except (SpecError, ValueError) as exc:
            raise DataError(f"{where}: {key} is not a valid format spec: {' '.join(str(exc).split())}") from None
        return fmt.display_name, fmt
    raise DataError(f"{where}: {key} = {value!r} is neither a format name nor a format spec")


def load_train_jsonl(path: str | Path) -> list[Run]:
    """Runs written by ``uscl train``; diverged or unfinished runs are skipped with a warning.

    Each line is one JSON object with at least the weight format (name or spec), N, D and the
    final validation loss; ``status`` other than ok/finished (e.g. ``diverged``) skips the run.
    """
    path = Path(path)
    runs: list[Run] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not a JSON line ({exc.msg}); expected one JSON object per line") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(rec).__name__}")
        status = rec.get("status")
        if isinstance(status, str) and status.lower() not in _OK_STATUS:
            warnings.warn(f"{where}: skipping run with status '{status}'", RunsWarning, stacklevel=2)
            continue
        n, d, loss = _lookup(rec, _KEYS_N), _lookup(rec, _KEYS_D), _lookup(rec, _KEYS_LOSS)
        missing = [name for name, v in (("N", n), ("D (tokens)", d), ("loss", loss)) if v is None]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (a uscl train record needs N, D and loss)")
        loss_value = _number(loss, "loss", where)
        if not math.isfinite(loss_value):
            warnings.warn(f"{where}: skipping diverged run (loss = {loss_value})", RunsWarning, stacklevel=2)
            continue
        weights, w_spec = _format_field(_lookup(rec, _KEYS_W), where, "weights")
        activations, a_spec = _format_field(_lookup(rec, _KEYS_A), where, "activations")
        # uscl train records carry the full specs beside the display names: prefer them.
        if isinstance(rec.get("weights_spec"), dict):
            w_spec = _format_field(rec["weights_spec"], where, "weights_spec")[1]
            weights = weights or (w_spec.display_name if w_spec else None)
        if isinstance(rec.get("activations_spec"), dict):
            a_spec = _format_field(rec["activations_spec"], where, "activations_spec")[1]
            activations = activations or (a_spec.display_name if a_spec else None)
        if weights is None:
            weights = "bf16"
        if w_spec is None:
            _check_spec(weights, where, "weights")
        if activations is not None and a_spec is None:
            _check_spec(activations, where, "activations")
        meta = {
            k: v for k, v in rec.items()
            if isinstance(v, str | int | float | bool) and k not in (*_KEYS_N, *_KEYS_D, *_KEYS_LOSS, *_KEYS_W, *_KEYS_A)
        }
        recorded = _recorded_gmse(rec.get("stage_gmse"), activations is not None, where)
        runs.append(
            Run(
                scheme=str(rec["scheme_name"]) if isinstance(rec.get("scheme_name"), str) else scheme_name(weights, activations),
                weights=weights,
                activations=activations,
                N=_number(n, "N", where),
                D=_number(d, "D", where),
                loss=loss_value,
                source=str(path),
                weights_spec=w_spec,
                activations_spec=a_spec,
                stage_gmse=recorded,
                meta=meta,
            )
        )
    return runs


def _recorded_gmse(value: Any, has_activations: bool, where: str) -> tuple[tuple[str, float], ...] | None:
    """``stage_gmse`` of a uscl train record -> ((family, GMSE), ...), weights' stages first."""
    if not isinstance(value, dict):
        return None
    out: list[tuple[str, float]] = []
    for tensor in ("weights", "activations") if has_activations else ("weights",):
        stages = value.get(tensor)
        if not isinstance(stages, list):
            return None
        for stage in stages:
            if not isinstance(stage, dict) or "family" not in stage or "gmse" not in stage:
                raise DataError(f"{where}: stage_gmse.{tensor} entries need 'family' and 'gmse'")
            out.append((str(stage["family"]), _number(stage["gmse"], "stage_gmse", where)))
    return tuple(out)


def _check_spec(spec: str, where: str, key: str) -> None:
    try:
        resolve_format(spec)
    except SpecError as exc:
        raise DataError(f"{where}: {key} format '{spec}' does not resolve: {exc}") from None


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

_CSV_N = ("n", "params", "model size", "model_size", "parameters")
_CSV_D = ("d", "tokens", "training tokens", "training_tokens")
_CSV_FLOP = ("training flop", "training_flop", "flop", "flops", "c", "compute")
_CSV_LOSS = ("loss", "final_loss", "val_loss")
_CSV_W = ("weights", "weight_format", "w_format")
_CSV_A = ("activations", "activation_format", "a_format")


def load_csv(path: str | Path) -> list[Run]:
    """A CSV of runs: N, D (or training FLOP, D = FLOP / 6N), loss, optional format columns.

    Without format columns every run is the dense ``bf16`` scheme (capacity 1).
    """
    path = Path(path)
    rows = list(csv.DictReader(_read_text(path).splitlines()))
    if not rows:
        raise DataError(f"{path}: no data rows (expected a header with N, D and loss)")
    header = {name.strip().lower(): name for name in rows[0] if name is not None}

    def column(options: Sequence[str]) -> str | None:
        return next((header[o] for o in options if o in header), None)

    col_n, col_d, col_flop, col_loss = column(_CSV_N), column(_CSV_D), column(_CSV_FLOP), column(_CSV_LOSS)
    col_w, col_a, col_s = column(_CSV_W), column(_CSV_A), column(("scheme",))
    if col_n is None or col_loss is None or (col_d is None and col_flop is None):
        raise DataError(
            f"{path}: needs columns N, loss and D (or 'Training FLOP'); found {', '.join(header.values())}"
        )
    runs = []
    known = {c for c in (col_n, col_d, col_flop, col_loss, col_w, col_a, col_s) if c}
    for lineno, row in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        n = _number(row[col_n], "N", where)
        d = _number(row[col_d], "D", where) if col_d else _number(row[col_flop], "Training FLOP", where) / (6.0 * n)
        weights = (row.get(col_w) or "").strip() if col_w else ""
        activations = (row.get(col_a) or "").strip() if col_a else ""
        weights = weights or "bf16"
        act = None if activations.lower() in ("", "none", "bf16", "16") else activations
        for spec, key in ((weights, "weights"), (act, "activations")):
            if spec is not None:
                _check_spec(spec, where, key)
        meta: dict[str, MetaValue] = {}
        for key, value in row.items():
            if key is None or key in known or value is None:
                continue
            try:
                meta[key] = float(value)
            except ValueError:
                meta[key] = value
        scheme = (row.get(col_s) or "").strip() if col_s else ""
        runs.append(
            Run(
                scheme=scheme or scheme_name(weights, act),
                weights=weights,
                activations=act,
                N=n,
                D=d,
                loss=_number(row[col_loss], "loss", where),
                source=str(path),
                meta=meta,
            )
        )
    return runs


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------

_WHERE = re.compile(r"^\s*(?P<key>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|!=|!~|==|=|~|>|<)\s*(?P<value>.*?)\s*$")


def parse_where(expr: str) -> tuple[str, str, str]:
    """``'w_bits>=4'`` -> ``('w_bits', '>=', '4')``; raises DataError on a malformed expression."""
    match = _WHERE.match(expr)
    if match is None or match["value"] == "":
        raise DataError(
            f"--where '{expr}' is not KEY OP VALUE (OP one of = != < <= > >= ~ !~; e.g. 'w_bits=4', "
            "'scheme~had', 'N>=1e8')"
        )
    op = "=" if match["op"] == "==" else match["op"]
    return match["key"], op, match["value"]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _matches(run: Run, key: str, op: str, value: str) -> bool:
    try:
        got = run.field(key)
    except KeyError:
        return False
    if op in ("~", "!~"):
        found = value.lower() in str(got).lower()
        return found if op == "~" else not found
    left, right = _as_number(got), _as_number(value)
    if left is not None and right is not None:
        return {
            "=": left == right, "!=": left != right, "<": left < right,
            "<=": left <= right, ">": left > right, ">=": left >= right,
        }[op]
    if op in ("=", "!="):
        same = str(got).lower() == value.lower()
        return same if op == "=" else not same
    raise DataError(f"--where '{key}{op}{value}': '{got}' and '{value}' are not both numbers")


def select(runs: Sequence[Run], where: Sequence[str] = ()) -> list[Run]:
    """Runs satisfying every ``--where`` expression (AND).

    Keys: scheme, weights, activations ('none' when not compressed), N, D, loss, w_bits,
    a_bits, tokens_per_param (tpp), source, and any metadata key of the runs. ``~`` is a
    case-insensitive substring test; numbers compare numerically.
    """
    parsed = [parse_where(e) for e in where]
    for key, _, _ in parsed:
        if runs and not any(_has_key(r, key) for r in runs):
            known = sorted({"scheme", "weights", "activations", "N", "D", "loss", "w_bits", "a_bits",
                            "tokens_per_param", "source"} | {k for r in runs for k in r.meta})
            raise DataError(f"--where key '{key}' is not a field of these runs (known: {', '.join(known)})")
    return [r for r in runs if all(_matches(r, k, op, v) for k, op, v in parsed)]


def _has_key(run: Run, key: str) -> bool:
    try:
        run.field(key)
    except KeyError:
        return False
    return True


def exclude_worst(runs: Sequence[Run], k: int) -> list[Run]:
    """Drop the ``k`` highest-loss runs (ties at the cut go too, as Besiroglu et al. did)."""
    if k < 0:
        raise DataError(f"--exclude-worst {k} must not be negative")
    if k == 0:
        return list(runs)
    if k >= len(runs):
        raise DataError(f"--exclude-worst {k} would drop all {len(runs)} runs")
    cut = sorted(r.loss for r in runs)[-k]
    return [r for r in runs if r.loss < cut]
