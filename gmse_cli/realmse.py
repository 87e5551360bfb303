"""Real-weight MSE: how far a checkpoint's weights are from the Gaussian that GMSE assumes.

For each format and each selected weight matrix W (rows = the input dimension),

    MSE_layer = ||W - C(W)||^2 / ||W||^2

and the checkpoint's MSE is the parameter-weighted mean of the layer values (each layer's
relative error counts in proportion to the parameters it holds, like the capacity law's N).
Beside it: the GMSE at the same row lengths (parameter-weighted likewise), their ratio, the
effective bits log_{1/4}(MSE), and the capacity the law predicts from each. Capacities
factorize over lossy stages, as in the paper: a composite format's capacity is the product
of the family curves at each stage's own MSE (stage alone on the same weights, or alone on
Gaussian rows for GMSE).

Decisions worth knowing:

- A layer whose row length a format cannot split (a group of 128 on a row of 96) is *skipped*
  for that format and listed in ``skipped`` with the reason; it is never padded, because
  padding changes what is measured (the last group's scale statistics, the rotation).
- Row-local formats run on chunks of rows (``chunk_bytes`` of float32 at a time). A scalar
  quantizer with a per-tensor second-level scale (e4m3 as in NVFP4, int8) streams in two
  passes: the first finds the tensor's largest raw group scale, the second quantizes each
  chunk with it (the same result as the whole tensor). Formats with another per-tensor
  statistic (``tensor`` granularity, tensor-wide sparsity, a VQ with a two-level scale) see
  the whole tensor at once -- or, with ``sample``, the sampled rows stand in for the tensor:
  it is read into one float32 array (block by block, no second copy), and the peak is that
  array, the compressed copy and the compressor's working arrays for the largest layer.
- ``sample`` measures a random subset of rows of every layer; the layer estimate is a ratio of
  sums with a finite-population-corrected delta-method interval, combined over layers as
  independent strata.
- A Hadamard rotation does not change GMSE (a rotated i.i.d. Gaussian row is again i.i.d.
  Gaussian), so the rotated variant reuses its base format's GMSE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gmse_cli.checkpoint import (
    DEFAULT_CHUNK_BYTES,
    Checkpoint,
    TensorInfo,
    iter_row_chunks,
    open_checkpoint,
    read_rows,
    select_layers,
)
from gmse_cli.errors import LawError, SpecError
from gmse_cli.spec import (
    VQ,
    Family,
    Format,
    Quantize,
    Rotate,
    ScaleFormat,
    Sparsify,
    resolve_format,
)

__all__ = [
    "LayerMse",
    "SkippedLayer",
    "StageMse",
    "FormatMse",
    "measure_mse",
    "measure_layers",
    "with_hadamard",
    "row_local",
    "row_errors",
    "ratio_estimate",
    "ratio_influence",
    "stage_targets",
    "resolve_law",
]

_Z95 = 1.959963984540054  # two-sided 95% normal quantile


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LayerMse(_Result):
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


class SkippedLayer(_Result):
    name: str
    reason: str


class StageMse(_Result):
    """One lossy stage alone: its family, real-weight MSE and GMSE (for factorized capacity)."""

    family: Family
    mse: float
    gmse: float


class FormatMse(_Result):
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
    stages: tuple[StageMse, ...] = Field(description="each lossy stage alone (capacity factors)")
    params: int = Field(description="parameters in the measured layers")
    sample: float = Field(description="fraction of rows measured (1 = all)")
    layers: tuple[LayerMse, ...]
    skipped: tuple[SkippedLayer, ...]


# --------------------------------------------------------------------------------------------
# Kernels: per-row squared error and squared norm
# --------------------------------------------------------------------------------------------


def _row_errors_numpy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    d = y.astype(np.float64) - x64
    return np.einsum("ij,ij->i", d, d), np.einsum("ij,ij->i", x64, x64)


_kernel: Callable | None = None


def _row_errors_numba(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    global _kernel
    if _kernel is None:
        import numba

        @numba.njit(parallel=True, cache=True)
        def kernel(x, y):  # pragma: no cover - compiled
            rows, cols = x.shape
            err = np.empty(rows, dtype=np.float64)
            norm = np.empty(rows, dtype=np.float64)
            for r in numba.prange(rows):
                e = 0.0
                n = 0.0
                for c in range(cols):
                    xv = np.float64(x[r, c])
                    d = np.float64(y[r, c]) - xv
                    e += d * d
                    n += xv * xv
                err[r] = e
                norm[r] = n
            return err, norm

        _kernel = kernel
    return _kernel(x, y)


def row_errors(x: np.ndarray, y: np.ndarray, *, reference: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(||y - x||^2, ||x||^2)`` in float64 for float32 ``(rows, row_length)`` arrays.

    One fused pass (numba); ``reference=True`` runs the plain numpy twin.
    """
    if reference:
        return _row_errors_numpy(x, y)
    return _row_errors_numba(x, y)


def ratio_influence(
    err: np.ndarray,
    norm: np.ndarray,
    *,
    population: int | None = None,
    certain: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """sum(err) / sum(norm) over sampled rows, and each row's influence on it.

    The influence vector ``psi`` is the linearization of the ratio around its value, scaled so
    that ``sqrt(sum(psi**2))`` is the delta-method standard error. Two estimates made on the
    same rows (common random numbers) have a difference whose standard error is
    ``sqrt(sum((psi_a - psi_b)**2))``, far below either error when the formats err alike.

    ``population``: the rows the random sample was drawn from without replacement (the
    finite-population correction makes the influence 0 when all were measured); ``None`` is an
    unbounded population (i.i.d. rows, as from a Gaussian bank). ``certain`` (bool per row)
    marks a stratum measured in full, outside the random sample: the random rows then stand
    for ``population`` rows each weighted ``population / (number of random rows)``.
    """
    m = len(err)
    if certain is None:
        certain = np.zeros(m, dtype=bool)
    rand = ~certain
    k = int(rand.sum())
    weight = 1.0 if population is None or k == 0 else population / k
    total = float(norm[certain].sum()) + weight * float(norm[rand].sum())
    if total == 0.0:
        return 0.0, np.zeros(m)
    r = (float(err[certain].sum()) + weight * float(err[rand].sum())) / total
    psi = np.zeros(m)
    if k == 0 or (population is not None and k >= population):
        return r, psi  # every row measured: the value is exact
    if k < 2:
        psi[rand] = math.inf
        return r, psi
    fpc = 1.0 if population is None else 1.0 - k / population
    psi[rand] = (err[rand] - r * norm[rand]) * (weight * math.sqrt(fpc * k / (k - 1)) / total)
    return r, psi


def ratio_estimate(err: np.ndarray, norm: np.ndarray, *, population: int | None = None) -> tuple[float, float]:
    """sum(err) / sum(norm) over sampled rows and its delta-method standard error (see
    :func:`ratio_influence`; 0 when every row of a finite population was measured)."""
    r, psi = ratio_influence(err, norm, population=population)
    return r, math.sqrt(float(psi @ psi))


# --------------------------------------------------------------------------------------------
# Format helpers
# --------------------------------------------------------------------------------------------


def with_hadamard(fmt: Format, *, block: int = 128) -> Format:
    """``fmt`` with a Hadamard rotation stage prepended (named ``had{block}+name``)."""
    return Format(
        name=f"had{block}+{fmt.display_name}",
        description=f"{block}-block Hadamard rotation, then {fmt.describe()}",
        stages=(Rotate(block=block), *fmt.stages),
    )


def row_local(fmt: Format) -> bool:
    """Whether every stage acts on each row alone (so rows can be processed in chunks)."""
    return _locality(fmt) == "rows"


def _locality(fmt: Format) -> str:
    """``rows``: every stage acts on each row alone; ``two-pass``: so does everything but a
    scalar quantizer's second-level scale (e4m3 as in NVFP4, int8), which one pass over the
    rows finds first; ``tensor``: the compressor needs the whole tensor at once."""
    locality = "rows"
    for stage in fmt.stages:
        if isinstance(stage, Quantize | VQ):
            if stage.group == "tensor":
                return "tensor"
            # e4m3 (NVFP4) and int8 scales are stored relative to a per-tensor second-level scale.
            if stage.scale_format in (ScaleFormat.E4M3, ScaleFormat.INT8):
                locality = "two-pass" if isinstance(stage, Quantize) else "tensor"
        elif isinstance(stage, Sparsify) and stage.granularity == "tensor":
            return "tensor"
    return locality


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
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Per-layer sums for one target format."""

    layers: list[tuple[TensorInfo, int, float, float, float]] = field(default_factory=list)
    # (info, rows measured, mse, std_err, params)
    skipped: list[SkippedLayer] = field(default_factory=list)


def _validate(sample: float | None, chunk_bytes: int) -> None:
    if sample is not None and not (0.0 < sample <= 1.0):
        raise SpecError(f"--sample {sample} must be a fraction in (0, 1] (e.g. 0.1 for 10% of rows)")
    if chunk_bytes < 1:
        raise SpecError(f"chunk_bytes {chunk_bytes} must be positive")


@dataclass
class _RowSample:
    rows: np.ndarray | None  # sorted indices of the rows to measure; None: all of them
    certain: np.ndarray | None  # per measured row: in the stratum measured in full
    population: int  # rows the random part was drawn from (all rows when all are measured)


def _sample_rows(info: TensorInfo, sample: float | None, rng: np.random.Generator, chunk_bytes: int) -> _RowSample:
    """Rows to measure for ``--sample``: half the budget on the rows with the largest |w|,
    measured with certainty, half drawn at random from the rest.

    Real weights put most of a format's error in a few outlier rows; a plain random sample
    misses them and reports a tight interval around a value far too low. The largest |w| of a
    row (one cheap read) predicts its error, so those rows are taken whole (stratified
    sampling: unbiased, and the interval covers only the random stratum).
    """
    everything = _RowSample(None, None, info.rows)
    if sample is None or sample >= 1.0:
        return everything
    # At least two random rows, so an interval exists.
    k = min(info.rows, max(4, math.ceil(sample * info.rows)))
    if k >= info.rows:
        return everything
    amax = np.concatenate(
        [np.maximum(x.max(axis=1), -x.min(axis=1)) for x in iter_row_chunks(info, chunk_bytes=chunk_bytes)]
    )
    top = np.argpartition(-amax, k // 2)[: k // 2]
    rest = np.setdiff1d(np.arange(info.rows), top, assume_unique=True)
    picked = rng.choice(rest, size=k - len(top), replace=False)
    rows = np.sort(np.concatenate([top, picked]))
    return _RowSample(rows, np.isin(rows, top), len(rest))


def measure_layers(
    layers: Sequence[TensorInfo],
    targets: Sequence[Format],
    *,
    sample: float | None = None,
    seed: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    backend: str = "numba",
    on_layer: Callable[[TensorInfo], None] | None = None,
) -> list[_Tally]:
    """Per-layer MSE of every target on every layer: one read of each tensor for all targets."""
    from gmse_cli.compress import compress, top_raw_scale

    _validate(sample, chunk_bytes)
    reference = backend == "numpy"
    rng = np.random.default_rng(seed)
    tallies = [_Tally() for _ in targets]
    locality = [_locality(t) for t in targets]
    for info in layers:
        fits: list[int] = []
        for i, target in enumerate(targets):
            try:
                target.check_row_length(info.row_length)
                fits.append(i)
            except SpecError as exc:
                tallies[i].skipped.append(SkippedLayer(name=info.name, reason=str(exc)))
        chosen = _sample_rows(info, sample, rng, chunk_bytes) if fits else _RowSample(None, None, info.rows)
        rows = chosen.rows
        measured = info.rows if rows is None else len(rows)
        err = {i: [] for i in fits}
        norm: list[np.ndarray] = []
        chunked = [i for i in fits if locality[i] == "rows"]
        two_pass = [i for i in fits if locality[i] == "two-pass"]
        whole = [i for i in fits if locality[i] == "tensor"]
        tops = dict.fromkeys(two_pass, 0.0)
        if chunked or two_pass:
            for x in iter_row_chunks(info, rows=rows, chunk_bytes=chunk_bytes):
                for j, i in enumerate(chunked):
                    e, n = row_errors(x, compress(targets[i], x, backend=backend), reference=reference)
                    err[i].append(e)
                    if j == 0:
                        norm.append(n)
                for i in two_pass:  # first pass: the tensor's largest raw group scale
                    tops[i] = max(tops[i], top_raw_scale(targets[i], x, backend=backend))
        if two_pass:
            for x in iter_row_chunks(info, rows=rows, chunk_bytes=chunk_bytes):
                for j, i in enumerate(two_pass):
                    y = compress(targets[i], x, backend=backend, top_raw_scale=tops[i])
                    e, n = row_errors(x, y, reference=reference)
                    err[i].append(e)
                    if j == 0 and not chunked:
                        norm.append(n)
        if whole:
            # The compressor needs the tensor at once: one float32 copy, read block by block.
            x = read_rows(info, slice(None) if rows is None else rows, chunk_bytes=chunk_bytes)
            for j, i in enumerate(whole):
                e, n = row_errors(x, compress(targets[i], x, backend=backend), reference=reference)
                err[i].append(e)
                if j == 0 and not (chunked or two_pass):
                    norm.append(n)
            del x
        if fits:
            norms = np.concatenate(norm)
            for i in fits:
                mse, psi = ratio_influence(
                    np.concatenate(err[i]), norms, population=chosen.population, certain=chosen.certain
                )
                se = math.sqrt(float(psi @ psi))
                tallies[i].layers.append((info, measured, mse, se, info.params))
        if on_layer is not None:
            on_layer(info)
    return tallies


def _combine(tally: _Tally) -> tuple[float, float, int]:
    """Parameter-weighted mean of the layer MSEs and its standard error (independent strata)."""
    params = sum(p for *_, p in tally.layers)
    mse = sum(m * p for _, _, m, _, p in tally.layers) / params
    var = sum((s * p / params) ** 2 for _, _, _, s, p in tally.layers)
    return mse, math.sqrt(var), params


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


def _effective_bits(value: float) -> float | None:
    return -math.log(value) / math.log(4.0) if value > 0 else None


def _capacity(law, parts: Sequence[tuple[Family, float]]) -> float | None:
    """prod over lossy stages of rho_family(MSE_stage); None when the law lacks a family."""
    from gmse_cli.law import factorized_capacity

    if law is None:
        return None
    try:
        return factorized_capacity(law, [(family, max(value, 1e-300)) for family, value in parts])
    except LawError:
        return None


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
    _validate(sample, chunk_bytes)
    resolved = [resolve_format(f) for f in formats]
    if not resolved:
        raise SpecError("name at least one format with --format")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else open_checkpoint(checkpoint)
    layers = select_layers(ckpt, include=include, exclude=exclude)
    law_obj = resolve_law(law)

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

    bar = None
    on_layer = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from gmse_cli.cli._console import err_console

        bar = Progress(
            TextColumn("measuring {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=err_console, transient=True,
        )
        task = bar.add_task("", total=sum(t.params for t in layers))

        def on_layer(info: TensorInfo) -> None:
            bar.update(task, advance=info.params, description=info.name)

        bar.start()
    try:
        tallies = measure_layers(
            layers, targets, sample=sample, seed=seed, chunk_bytes=chunk_bytes, backend=backend, on_layer=on_layer,
        )
    finally:
        if bar is not None:
            bar.stop()

    gmse_cache: dict = {}
    results = []
    for fmt, rotated, tid, stage_ids in plan:
        tally = tallies[tid]
        if not tally.layers:
            lengths = sorted({t.row_length for t in layers})
            raise SpecError(
                f"format '{fmt.display_name}' fits none of the selected layers (row lengths "
                f"{', '.join(map(str, lengths))}): {tally.skipped[0].reason}"
            )
        if tally.skipped and warn:
            warn(f"{fmt.display_name}: skipped {len(tally.skipped)} layer(s): {tally.skipped[0].reason}")
        mse, se, params = _combine(tally)
        row_lengths: dict[int, int] = {}
        for info, *_ in tally.layers:
            row_lengths[info.row_length] = row_lengths.get(info.row_length, 0) + info.params
        # GMSE is rotation invariant: the rotated variant reuses its base format's estimate.
        base = Format(stages=tuple(s for s in fmt.stages if not isinstance(s, Rotate)) or fmt.stages) if rotated else fmt
        g, g_se = _weighted_gmse(base, row_lengths, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend)
        layer_gmse = {
            length: _weighted_gmse(base, {length: 1}, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend)[0]
            for length in row_lengths
        }
        stages = []
        for (family, sid), (_, stage_fmt) in zip(stage_ids, stage_targets(base), strict=True):
            stage_mse, _, _ = _combine(tallies[sid]) if tallies[sid].layers else (math.nan, 0, 0)
            stage_g = g if len(stage_ids) == 1 else _weighted_gmse(
                stage_fmt, row_lengths, rel_err=rel_err, seed=seed, cache=gmse_cache, backend=backend
            )[0]
            stages.append(StageMse(family=family, mse=stage_mse, gmse=stage_g))
        bits = sum(fmt.bits_per_param(length) * p for length, p in row_lengths.items()) / params
        measured_rows = sum(r for _, r, *_ in tally.layers)
        total_rows = sum(info.rows for info, *_ in tally.layers)
        results.append(
            FormatMse(
                format=fmt.display_name,
                hadamard=rotated,
                spec=fmt,
                bits_per_param=bits,
                mse=mse,
                ci_low=max(0.0, mse - _Z95 * se),
                ci_high=mse + _Z95 * se,
                std_err=se,
                gmse=g,
                gmse_std_err=g_se,
                ratio=mse / g if g > 0 else math.inf if mse > 0 else 1.0,
                effective_bits=_effective_bits(mse),
                gmse_effective_bits=_effective_bits(g),
                rho=_capacity(law_obj, [(s.family, s.mse) for s in stages]),
                rho_gmse=_capacity(law_obj, [(s.family, s.gmse) for s in stages]),
                stages=tuple(stages),
                params=params,
                sample=measured_rows / total_rows,
                layers=tuple(
                    LayerMse(
                        name=info.name, shape=(info.rows, info.row_length), params=p, mse=m,
                        gmse=layer_gmse[info.row_length],
                        ci_low=max(0.0, m - _Z95 * s), ci_high=m + _Z95 * s, std_err=s, rows_measured=r,
                    )
                    for info, r, m, s, p in tally.layers
                ),
                skipped=tuple(tally.skipped),
            )
        )
    return results


def resolve_law(law: object | None):
    """A Law as given, loaded from a file / shipped name, the shipped default, or None."""
    if law is None:
        return None
    from gmse_cli.law import Law, load_law

    if isinstance(law, Law):
        return law
    return load_law(None if law == "default" else law)
