"""The report of ``uscl mse``: each format's real-weight MSE beside its GMSE, per layer and
overall, with the capacities the law reads from each."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from gmse_cli.errors import DataError, LawError, SpecError, more_likewise
from gmse_cli.frozen import Frozen
from gmse_cli.gmse.estimates import effective_bits_of, interval95
from gmse_cli.limits import check_seed
from gmse_cli.progress import task
from gmse_cli.realmse.checkpoint import Checkpoint, open_checkpoint
from gmse_cli.realmse.layers import checkpoint_notes, select_layers
from gmse_cli.realmse.measure import (
    MeasuredLayer,
    SkippedLayer,
    Tally,
    check_sampling,
    measure_layers,
)
from gmse_cli.realmse.tensorfile import DEFAULT_CHUNK_BYTES
from gmse_cli.spec import Family, Format, Overflow, Quantize, Rotate, ScaleRule, resolve_format

__all__ = [
    "LayerMse",
    "StageMse",
    "FormatMse",
    "measure_mse",
    "MsePlan",
    "plan_targets",
    "assemble_results",
    "with_hadamard",
    "stage_targets",
    "resolve_law",
]


class LayerMse(Frozen):
    """One weight matrix under one format."""

    name: str
    shape: tuple[int, int] = Field(description="(rows, row_length) as measured")
    params: int
    mse: float = Field(description="||W - C(W)||^2 / ||W||^2 over the measured rows")
    gmse: float = Field(description="GMSE of the format at this layer's row length")
    ci_low: float = Field(description="95% interval (equal to mse when every row is measured)")
    ci_high: float
    std_err: float
    rows_measured: int

    @classmethod
    def of(
        cls, info: MeasuredLayer, *, rows: int, mse: float, std_err: float, gmse: float, dof: float = math.inf
    ) -> LayerMse:
        """The result for ``info`` measured on ``rows`` of its rows (``dof``: of ``std_err``)."""
        low, high = interval95(mse, std_err, dof=dof)
        return cls(
            name=info.name, shape=(info.rows, info.row_length), params=info.params, mse=mse, gmse=gmse,
            ci_low=low, ci_high=high, std_err=std_err, rows_measured=rows,
        )


class StageMse(Frozen):
    """One lossy stage alone: its family, real-weight MSE and GMSE (for factorized capacity).

    ``tensor``, ``family`` and ``name`` are what ``predict`` calls the same stage."""

    tensor: Literal["weights", "activations"] = Field(description="what the stage compresses")
    family: Family
    name: str = Field(description="the stage as a format of its own: 'int4[quantize]', '2:4+int4[sparsify]'")
    mse: float
    gmse: float


class FormatMse(Frozen):
    """A format (or its Hadamard variant) measured on a checkpoint."""

    format: str = Field(description="display name")
    hadamard: bool = Field(description="a Hadamard rotation stage was prepended")
    spec: Format
    bits_per_param: float = Field(description="parameter-weighted over the measured layers' row lengths")
    mse: float = Field(description="parameter-weighted mean of the layer MSEs")
    ci_low: float
    ci_high: float
    std_err: float
    gmse: float = Field(description="GMSE at the measured layers' row lengths, parameter-weighted")
    gmse_std_err: float
    ratio: float = Field(description="mse / gmse: 1 means the weights compress like Gaussians")
    effective_bits: float | None = Field(description="log_{1/4}(mse); None when mse is 0")
    gmse_effective_bits: float | None
    rho: float | None = Field(description="capacity from the real-weight MSE (None: law lacks the family)")
    rho_gmse: float | None = Field(description="capacity from GMSE")
    fitted_gmse_recorded: bool | None = Field(
        default=None, description="whether the law records the stage GMSEs its curves were fitted at "
                                  "([fitted_range.gmse]); False: beyond_fitted_gmse cannot flag; None: no law")
    beyond_fitted_gmse: str | None = Field(
        default=None, description="why rho (read at the real MSE) lies beyond the law's fitted stages, as in rank; "
                                  "None: within them, or not recorded (fitted_gmse_recorded)")
    stages: tuple[StageMse, ...] = Field(description="each lossy stage alone (capacity factors)")
    dequantized: str | None = Field(
        default=None, description="how an fp8 checkpoint's weights were read as floats (code x scale), which the "
                                  "MSE is measured against; None: the checkpoint stores floats")
    params: int = Field(description="parameters in the measured layers")
    sample: float = Field(description="fraction of rows measured (1 = all)")
    layers: tuple[LayerMse, ...]
    skipped: tuple[SkippedLayer, ...]


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def with_hadamard(fmt: Format, *, block: int = 128) -> Format:
    """``fmt`` with a Hadamard rotation stage prepended (named ``had{block}+name``)."""
    return Format(
        name=f"had{block}+{fmt.display_name}",
        description=f"{block}-block Hadamard rotation, then {fmt.describe()}",
        stages=(Rotate(block=block), *fmt.stages),
    )


def stage_targets(fmt: Format) -> list[tuple[Family, Format]]:
    """Each lossy stage of ``fmt`` as a format of its own, for the factorized capacity.

    A single-stage format is its own target. Otherwise :meth:`Format.stage_formats` with
    every stage keeping the format's rotations: on real weights a rotated format sparsifies
    *rotated* weights, so the sparsity stage alone must see them too.
    """
    if len(fmt.families) <= 1:
        return [(family, fmt) for family in fmt.families]
    return fmt.stage_formats(keep_rotations=True)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _weighted_gmse(
    fmt: Format,
    row_lengths: dict[int, int],
    *,
    rel_err: float,
    seed: int,
    cache: dict,
    backend: str,
) -> tuple[float, float]:
    """GMSE at each measured row length, weighted by the parameters at that row length."""
    from gmse_cli.gmse import gmse_of

    total = sum(row_lengths.values())
    g = 0.0
    var = 0.0
    for length, params in row_lengths.items():
        key = (fmt.model_dump_json(exclude={"name", "description"}), length)
        if key not in cache:
            gmse_backend = "numpy" if backend == "numpy" else "numba"
            cache[key] = gmse_of(fmt, row_length=length, rel_err=rel_err, seed=seed, backend=gmse_backend)
        est = cache[key]
        g += est.gmse * params / total
        var += (est.std_err * params / total) ** 2
    return g, math.sqrt(var)


def _capacity(law, parts: Sequence[tuple[Family, float]]) -> float | None:
    """prod over lossy stages of rho_family(MSE_stage); None when the law lacks a family."""
    from gmse_cli.law import factorized_capacity

    if law is None:
        return None
    try:
        return factorized_capacity(law, [(family, max(value, 1e-300)) for family, value in parts])
    except LawError:
        return None


@dataclass(frozen=True)
class MsePlan:
    """What to measure for a list of formats: each variant (a format, or its Hadamard-rotated
    twin) with the measurement targets of the whole format and of each lossy stage; formats
    that coincide are measured once."""

    targets: list[Format]
    # (format, rotated variant, its target, (family, target) per lossy stage)
    variants: list[tuple[Format, bool, int, list[tuple[Family, int]]]]


def plan_targets(
    formats: Sequence[Format | str],
    *,
    hadamard: bool = False,
    hadamard_block: int = 128,
    warn: Callable[[str], None] | None = None,
) -> MsePlan:
    """Resolve ``formats`` and list what to measure (with ``hadamard``: each format rotated too,
    unless it already rotates). Raises :class:`SpecError` for no formats or a bad one."""
    resolved = [resolve_format(f) for f in formats]
    if not resolved:
        raise SpecError("name at least one format with --format")
    variants: list[tuple[Format, bool]] = []
    for fmt in resolved:
        variants.append((fmt, False))
        if hadamard:
            if fmt.rotations:
                if warn:
                    warn(f"{fmt.display_name} already rotates; no extra Hadamard variant (two rotations would cancel)")
            else:
                variants.append((with_hadamard(fmt, block=hadamard_block), True))

    # Every format and each of its lossy stages is a measurement target; duplicates measured once.
    targets: list[Format] = []
    index: dict[str, int] = {}

    def target(f: Format) -> int:
        key = f.model_dump_json(exclude={"name", "description"})
        if key not in index:
            index[key] = len(targets)
            targets.append(f)
        return index[key]

    plan = []
    for fmt, rotated in variants:
        stage_ids = [(family, target(sf)) for family, sf in stage_targets(fmt)]
        plan.append((fmt, rotated, target(fmt), stage_ids))
    return MsePlan(targets, plan)


def assemble_results(
    plan: MsePlan,
    tallies: Sequence[Tally],
    layers: Sequence[MeasuredLayer],
    *,
    law: object | None,
    rel_err: float,
    seed: int,
    backend: str = "numba",
    warn: Callable[[str], None] | None = None,
    tensor: Literal["weights", "activations"] = "weights",
    dequantized: str | None = None,
) -> list[FormatMse]:
    """One :class:`FormatMse` per planned variant from the per-layer tallies of its targets
    (over ``layers``, which hold ``tensor``, read as ``dequantized`` says when they come from fp8
    codes): the overall MSE, GMSE at the measured row lengths, and the capacities from each.

    ``law`` is as for :func:`resolve_law`. Raises :class:`SpecError` when a format fit no layer.
    """
    law_obj = resolve_law(law)
    gmse_cache: dict = {}
    results = []
    for fmt, rotated, tid, stage_ids in plan.variants:
        tally = tallies[tid]
        if not tally.layers and tally.skipped and all(s.all_zeros for s in tally.skipped):
            more = more_likewise(len(tally.skipped) - 1, "layer")
            raise DataError(f"no layer to measure: {tally.skipped[0].reason}{more}")
        if not tally.layers:
            lengths = sorted({t.row_length for t in layers})
            raise SpecError(
                f"format '{fmt.display_name}' fits none of the selected layers (row lengths "
                f"{', '.join(map(str, lengths))}): {tally.skipped[0].reason}"
            )
        if tally.skipped and warn:
            warn(f"{fmt.display_name}: skipped {len(tally.skipped)} layer(s): {tally.skipped[0].reason}")
        if (tally.over or tally.flushed) and warn:
            warn(range_note(fmt, tally.checked, tally.over, tally.flushed))
        mse, se, params = tally.combined()
        row_lengths: dict[int, int] = {}
        for t in tally.layers:
            row_lengths[t.info.row_length] = row_lengths.get(t.info.row_length, 0) + t.info.params
        # GMSE is rotation invariant: the rotated variant reuses its base format's estimate.
        base = Format(stages=tuple(s for s in fmt.stages if not isinstance(s, Rotate)) or fmt.stages) if rotated else fmt
        g, g_se = _weighted_gmse(base, row_lengths, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend)
        layer_gmse = {
            length: _weighted_gmse(base, {length: 1}, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend)[0]
            for length in row_lengths
        }
        stages = []
        # each stage alone on the same layers as the whole format (it may fit layers the whole skips)
        measured = {t.info.name for t in tally.layers}
        names = [named.display_name for _, named in fmt.stage_formats()]
        for (family, sid), (_, stage_fmt), name in zip(stage_ids, stage_targets(base), names, strict=True):
            stage_mse, _, _ = tallies[sid].combined(measured)
            stage_g = g if len(stage_ids) == 1 else _weighted_gmse(
                stage_fmt, row_lengths, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend
            )[0]
            stages.append(StageMse(tensor=tensor, family=family, name=name, mse=stage_mse, gmse=stage_g))
        bits = sum(fmt.bits_per_param(length) * p for length, p in row_lengths.items()) / params
        measured_rows = sum(t.rows for t in tally.layers)
        total_rows = sum(t.info.rows for t in tally.layers)
        low, high = interval95(mse, se, dof=tally.combined_dof())
        results.append(
            FormatMse(
                format=fmt.display_name,
                hadamard=rotated,
                spec=fmt,
                bits_per_param=bits,
                mse=mse,
                ci_low=low,
                ci_high=high,
                std_err=se,
                gmse=g,
                gmse_std_err=g_se,
                ratio=mse / g if g > 0 else math.inf if mse > 0 else 1.0,
                effective_bits=effective_bits_of(mse),
                gmse_effective_bits=effective_bits_of(g),
                rho=_capacity(law_obj, [(s.family, s.mse) for s in stages]),
                rho_gmse=_capacity(law_obj, [(s.family, s.gmse) for s in stages]),
                fitted_gmse_recorded=law_obj.fitted_gmse_recorded if law_obj else None,
                beyond_fitted_gmse=law_obj.beyond_fitted_gmse((s.family, s.mse) for s in stages) if law_obj else None,
                stages=tuple(stages),
                dequantized=dequantized,
                params=params,
                sample=measured_rows / total_rows,
                layers=tuple(
                    LayerMse.of(t.info, rows=t.rows, mse=t.mse, std_err=t.std_err, gmse=layer_gmse[t.info.row_length],
                                dof=t.dof)
                    for t in tally.layers
                ),
                skipped=tuple(tally.skipped),
            )
        )
    return results


def measure_mse(
    checkpoint: str | Path | Checkpoint,
    formats: Sequence[Format | str],
    *,
    hadamard: bool = False,
    hadamard_block: int = 128,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    sample: float | None = None,
    seed: int = 0,
    law: object | None = "default",
    rel_err: float = 1e-3,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    backend: str = "numba",
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[FormatMse]:
    """Real-weight MSE of each format (and, with ``hadamard``, of each format rotated first).

    ``law`` is a :class:`~gmse_cli.law.Law`, a law file path or shipped name, ``"default"``
    for the shipped law, or None for no capacities. ``sample`` is the fraction of rows measured
    per layer (None: all); ``seed`` picks them. ``rel_err`` is the GMSE estimates' target
    relative standard error. ``chunk_bytes`` bounds the float32 rows processed at once.
    ``warn`` receives one-line notes (a format skipped for a rotated variant, layers skipped).
    Raises :class:`DataError` for checkpoint problems and :class:`SpecError` when a format
    fits no selected layer.
    """
    check_sampling(sample, chunk_bytes)
    seed = check_seed(seed)
    plan = plan_targets(formats, hadamard=hadamard, hadamard_block=hadamard_block, warn=warn)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else open_checkpoint(checkpoint)
    layers = select_layers(ckpt, include=include, exclude=exclude)
    resolve_law(law)  # a bad law fails before the measurement
    for line in checkpoint_notes(ckpt, include) if warn else ():
        warn(line)
    with task("measuring", sum(t.params for t in layers), enabled=progress, count="percent") as bar:
        tallies = measure_layers(
            layers, plan.targets, sample=sample, seed=seed, chunk_bytes=chunk_bytes, backend=backend,
            on_layer=lambda info: bar.advance(info.params, detail=info.name),
        )
    return assemble_results(plan, tallies, layers, law=law, rel_err=rel_err, seed=seed, backend=backend, warn=warn,
                            dequantized=ckpt.dequantized)


def range_note(fmt: Format, checked: int, over: int, flushed: int) -> str:
    """One line on casts that left their range on real weights (:func:`measure_layers`)."""
    q = fmt.quantizer
    assert isinstance(q, Quantize)
    plain = q.scale is ScaleRule.NONE
    what = "values" if plain else f"{q.scale_format} scales"
    parts = []
    if over:
        fate = "became inf/NaN" if q.overflow is Overflow.INF else "saturated at the largest value"
        parts.append(f"{over:,} of {checked:,} {what} were beyond the format's range and {fate}")
    if flushed:
        parts.append(f"{flushed:,} of {checked:,} {what} underflowed to zero (those groups read back as zeros)")
    return f"{fmt.display_name}: " + "; ".join(parts)


def resolve_law(law: object | None):
    """A Law as given, loaded from a file / shipped name, the shipped default, or None."""
    if law is None:
        return None
    from gmse_cli.law import Law, load_law

    if isinstance(law, Law):
        return law
    return load_law(None if law == "default" else law)
