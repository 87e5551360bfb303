"""Real activations: what a format does to the inputs of a model's linear layers.

A model folder runs on the first tokens of a text (:mod:`gmse_cli.training.activations`
loads it and hooks its linear layers; torch is imported only when this runs). The input of
each linear layer is a stream of token rows (rows = the layer's input dimension, as a format
sees a weight row). For a format C the layer's value is

    MSE_layer = mean over token rows x of ||x - C(x)||^2 / ||x||^2

each row normalised by its own norm: token norms span orders of magnitude (a first token's
"massive activations"), and a ratio of sums would be the error of those few rows alone, while
a format with per-row or per-group scales errs on each row independently of its scale, as
GMSE assumes. Rows that are all zero have no relative error and are left out (counted in
``zero_rows``). The model's value is the parameter-weighted mean of the layer values, as for
weights, beside the GMSE at the same row lengths, their ratio and the capacities the law
reads from each (factorized over lossy stages); a weights x activations scheme's capacity is
rho_W(real weight MSE) x rho_A(real activation MSE) beside rho_W(GMSE) x rho_A(GMSE).

Two passes over the text, never holding the activations:

1. statistics: every row's kurtosis (Pearson, about the row's mean: 3 for a Gaussian row) and
   largest |x| / RMS, plain and after a ``hadamard_block`` Hadamard rotation, computed on the
   model's device; per layer the mean kurtosis and the largest ratio are reported;
2. measurement: per layer, the rows chosen from the first pass's ``max |x| / RMS`` (``sample``:
   half the budget on the rows with the largest ratio, measured with certainty, half drawn at
   random, seeded; no ``sample``: every row) are copied to the host as they pass and run
   through every format by the same compressors as weights. The layer's estimate and interval
   are those of ``uscl mse --sample`` (stratified, finite-population corrected); the interval
   covers the choice of rows among the tokens processed, not the choice of text.

Per-tensor statistics of a format (NVFP4's second-level scale, tensor-wide scales or sparsity)
are taken over one forward batch of a layer's rows (dynamic quantization). Layers whose row
length a format cannot split are skipped for that format, never padded; rotated statistics
are reported only for row lengths that are multiples of the Hadamard block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmse_cli.errors import BackendMissing, DataError, SpecError
from gmse_cli.limits import check_seed
from gmse_cli.progress import task
from gmse_cli.realmse.activation_report import (
    ActivationLayer,
    ActivationReport,
    largest,
    pair_schemes,
    weighted_mean,
)
from gmse_cli.realmse.layers import DEFAULT_EXCLUDE, RowSample, locality, matches, stratified_rows
from gmse_cli.realmse.measure import (
    SkippedLayer,
    Tally,
    check_sampling,
    ratio_influence,
    row_errors,
)
from gmse_cli.realmse.report import (
    FormatMse,
    assemble_results,
    measure_mse,
    plan_targets,
    resolve_law,
)
from gmse_cli.spec import Format

__all__ = ["measure_activations"]


@dataclass(frozen=True)
class _Site:
    """A layer's input stream as a measured layer (:class:`~gmse_cli.realmse.measure.MeasuredLayer`)."""

    name: str
    rows: int
    row_length: int
    params: int


_STATS = ("mean_square", "crest", "kurtosis", "crest_rotated", "kurtosis_rotated")


@dataclass
class _Layer:
    """Everything kept about one layer between and during the passes: a few floats per row, in
    arrays allocated before the model runs (long-lived small arrays allocated between the
    forward pass's large temporaries pin them in the C heap: measured, the resident set grew
    by 1 GB per forward batch of a 300 MB model)."""

    name: str
    row_length: int
    params: int
    stats: np.ndarray  # (len(_STATS), capacity) float32 per row (NaN: not computed)
    seen: int = 0  # rows passed so far in the current pass
    first_pass_rows: int = 0
    chosen: np.ndarray | None = None  # sorted global indices of the rows to measure
    sample: RowSample | None = None
    fits: list[int] = field(default_factory=list)  # targets that can split this row length
    ratios: np.ndarray | None = None  # (len(fits), len(chosen)): per-row relative errors

    def record(self, plain, rotated, count: int) -> None:
        """Store one batch's per-row statistics (:class:`RowStats`, plain and rotated or None)."""
        if self.seen + count > self.stats.shape[1]:  # a layer run more than once per pass
            grown = np.full((len(_STATS), 2 * (self.seen + count)), np.nan, dtype=np.float32)
            grown[:, : self.seen] = self.stats[:, : self.seen]
            self.stats = grown
        where = slice(self.seen, self.seen + count)
        for k, value in enumerate((plain.mean_square, plain.crest, plain.kurtosis)):
            self.stats[k, where] = value
        if rotated is not None:
            self.stats[3, where] = rotated.crest
            self.stats[4, where] = rotated.kurtosis
        self.seen += count

    def stat(self, name: str) -> np.ndarray:
        return self.stats[_STATS.index(name), : self.first_pass_rows]


def _torch_side():
    try:
        from gmse_cli.training import activations
    except ImportError:
        raise BackendMissing(
            "measuring activations needs the [train] extra (torch, transformers): pip install 'uscl[train]'"
        ) from None
    return activations


def _default_formats(meta: dict | None, key: str) -> list[Format]:
    """A uscl train model's own format for ``key`` ('weights' or 'activations'), if lossy."""
    from gmse_cli.spec.format import validate_format
    from gmse_cli.training.config import is_identity_format

    if not meta or not meta.get(key):
        return []
    fmt = validate_format(meta[key], source=f"uscl.json {key}")
    return [] if is_identity_format(fmt) else [fmt]


def _require_text(data: str, text_field: str) -> None:
    """A local corpus that is missing, a device, empty or blank fails before the model loads
    (loading can take minutes); reading stops at the first piece holding text."""
    from gmse_cli.training.data import iter_corpus

    for text, _ in iter_corpus(data, text_field=text_field):
        if text.strip():
            return
    raise DataError(f"data source '{data}' holds no text")


def _select(layers, include: Sequence[str], exclude: Sequence[str], path: Path):
    """Linear layers by module name: the default leaves out embeddings, norms and the output
    head (as for weights); ``include`` replaces that rule, ``exclude`` always removes."""
    chosen = [
        layer for layer in layers
        if (matches(layer.name, include) if include else not matches(layer.name, DEFAULT_EXCLUDE))
        and not matches(layer.name, exclude)
    ]
    if not chosen:
        names = ", ".join(layer.name for layer in layers[:5]) or "none"
        raise DataError(f"no linear layers of {path} match the selection (linear layers include: {names}); "
                        "adjust --include/--exclude")
    return chosen


def measure_activations(
    model: str | Path,
    data: str,
    formats: Sequence[Format | str] = (),
    *,
    weight_formats: Sequence[Format | str] | None = None,
    tokenizer: str | None = None,
    tokens: int = 4096,
    context: int = 512,
    batch_size: int = 4,
    text_field: str = "text",
    val_fraction: float = 0.02,
    device: str = "auto",
    dtype: str = "float32",
    allow_pickle: bool = False,
    compressed_forward: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hadamard: bool = False,
    hadamard_block: int = 128,
    law: object | None = "default",
    rel_err: float = 1e-3,
    sample: float | None = None,
    seed: int = 0,
    backend: str = "numba",
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> ActivationReport:
    """Real-activation MSE of each format on ``model`` run over the first ``tokens`` tokens of
    ``data`` (see the module notes for what is measured and how).

    ``formats`` default to a uscl train model's activation format; ``weight_formats`` (default:
    its weight format) are measured on the same layers' weights and paired with the activation
    formats into schemes (rotated with rotated). ``tokenizer``: the model folder's own when
    None. ``context`` is capped at the model's ``max_position_embeddings``; ``batch_size``
    windows run per forward pass (the memory the captured rows cost on the device and, for
    per-tensor formats, on the host). ``device``/``dtype`` as for training; ``allow_pickle``
    loads ``.bin`` weights (unpickling can run code). ``text_field`` and ``val_fraction`` read
    the corpus as training does (``val_fraction`` matters only to rebuild a ``bpe:V``).
    Raises :class:`DataError` for model, data and tokenizer problems, :class:`SpecError` for
    bad formats or options and :class:`BackendMissing` without torch and transformers.
    """
    check_sampling(sample, 1)
    seed = check_seed(seed)
    for name, value, low in (("tokens", tokens, 1), ("context", context, 2), ("batch size", batch_size, 1)):
        if value < low:
            raise SpecError(f"{name} {value} must be at least {low}")
    if hadamard_block < 2 or hadamard_block & (hadamard_block - 1):
        raise SpecError(f"Hadamard block {hadamard_block} is not a power of two (2, 4, ... 128, ...)")
    torch_side = _torch_side()
    from gmse_cli.compress import compress, top_raw_scale
    from gmse_cli.training.data import first_tokens, model_windows

    if data.strip().lower() != "c4":
        _require_text(data, text_field)  # a missing, empty or endless (a device) text: before the model loads

    loaded = torch_side.load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle,
                                   compressed_forward=compressed_forward)
    formats = list(formats) or _default_formats(loaded.uscl, "activations")
    plan = plan_targets(formats, hadamard=hadamard, hadamard_block=hadamard_block, warn=warn)
    weight_formats = _default_formats(loaded.uscl, "weights") if weight_formats is None else list(weight_formats)
    resolve_law(law)  # a bad law fails before the model runs

    spec = tokenizer if tokenizer is not None else str(loaded.path)
    ids, tok = first_tokens(data, spec, count=tokens, val_fraction=val_fraction, text_field=text_field)
    if int(ids.max()) >= loaded.vocab_size:
        raise DataError(f"tokenizer '{spec}' gives token id {int(ids.max())}, beyond the model's vocabulary of "
                        f"{loaded.vocab_size}: give the tokenizer the model was trained with (--tokenizer)")
    length = min(context, loaded.max_positions or context)
    windows = model_windows(ids, context=length, prefix=tok.specials[0], suffix=tok.specials[1])

    linear = _select(torch_side.linear_layers(loaded.model), include, exclude, loaded.path)
    capacity = windows.size  # rows a layer sees when it runs once per forward pass
    state = [_Layer(layer.name, layer.in_features, layer.params, np.full((len(_STATS), capacity), np.nan, np.float32))
             for layer in linear]
    reference = backend == "numpy"
    where = [locality(t) for t in plan.targets]

    last: dict = {}  # the previous layer's statistics: q, k and v share one input

    def first(i: int, rows) -> None:
        st = state[i]
        rotate = st.row_length % hadamard_block == 0
        if not rows.same_input(last.get("rows")):
            last.update(rows=rows, plain=rows.statistics(),
                        rotated=rows.statistics(hadamard_block) if rotate else None)
        st.record(last["plain"], last["rotated"] if rotate else None, rows.count)

    def second(i: int, rows) -> None:
        st = state[i]
        start, st.seen = st.seen, st.seen + rows.count
        lo, hi = np.searchsorted(st.chosen, [start, start + rows.count])
        if lo == hi:
            return
        local = st.chosen[lo:hi] - start
        x = rows.take(local)
        whole = None  # the batch's rows, for formats with a per-tensor statistic
        for t in st.fits:
            fmt = plan.targets[t]
            if where[t] == "rows":
                y = compress(fmt, x, backend=backend)
            else:
                whole = rows.numpy() if whole is None else whole
                if where[t] == "two-pass":
                    y = compress(fmt, x, backend=backend, top_raw_scale=top_raw_scale(fmt, whole, backend=backend))
                else:
                    y = compress(fmt, whole, backend=backend)[local]
            err, norm = row_errors(x, y, reference=reference)
            st.ratios[st.fits.index(t), lo:hi] = err / norm

    def run(label: str, callback) -> None:
        for st in state:
            st.seen = 0
        with task(label, len(windows), enabled=progress) as bar:
            torch_side.capture_inputs(loaded, windows, linear, callback, batch_size=batch_size,
                                      on_batch=lambda done: bar.update(completed=done))

    run("activations: statistics", first)
    last.clear()
    rng = np.random.default_rng(seed)
    tallies = [Tally() for _ in plan.targets]
    for st in state:
        st.first_pass_rows = st.seen
        nonzero = np.flatnonzero(st.stat("mean_square") > 0)
        crest = st.stat("crest")[nonzero]
        st.sample = stratified_rows(crest, sample, rng)
        st.chosen = nonzero if st.sample.rows is None else nonzero[st.sample.rows]
        for t, fmt in enumerate(plan.targets):
            try:
                fmt.check_row_length(st.row_length)
            except SpecError as exc:
                tallies[t].skipped.append(SkippedLayer(name=st.name, reason=str(exc)))
                continue
            if len(nonzero):
                st.fits.append(t)
            else:
                tallies[t].skipped.append(SkippedLayer(name=st.name, all_zeros=True,
                                                           reason=f"every input row of {st.name} is zero"))
        st.ratios = np.full((len(st.fits), len(st.chosen)), np.nan)  # before the model runs again
    run("activations: measuring", second)

    sites = []
    for st in state:
        if st.seen != st.first_pass_rows:
            raise DataError(f"layer {st.name} saw {st.first_pass_rows} rows in the first pass and {st.seen} in "
                            "the second: the model's forward pass is not deterministic")
        site = _Site(st.name, int(np.count_nonzero(st.stat("mean_square") > 0)), st.row_length, st.params)
        sites.append(site)
        for t, v in zip(st.fits, st.ratios, strict=True):
            mse, psi = ratio_influence(v, np.ones_like(v), population=st.sample.population, certain=st.sample.certain)
            tallies[t].add(site, len(v), mse, psi, st.params, st.sample.certain)
    results = assemble_results(plan, tallies, sites, law=law, rel_err=rel_err, seed=seed, backend=backend, warn=warn,
                               tensor="activations")

    layer_stats = [_layer_stats(st) for st in state]
    weight_results: list[FormatMse] = []
    if weight_formats:
        # The same layers' weight matrices (a checkpoint may prefix the module names).
        patterns = [rf"re:(^|\.){re.escape(st.name)}\.weight$" for st in state]
        weight_results = measure_mse(loaded.path, weight_formats, hadamard=hadamard, hadamard_block=hadamard_block,
                                     include=patterns, sample=sample, seed=seed, law=law, rel_err=rel_err,
                                     backend=backend, progress=progress, warn=warn)
    return ActivationReport(
        model=str(loaded.path), forward=loaded.forward, data=str(data), tokenizer=spec,
        tokens=int(windows.size), windows=len(windows), context=int(windows.shape[1]), sample=sample, seed=seed,
        hadamard_block=hadamard_block, layers=tuple(layer_stats),
        kurtosis=weighted_mean(layer_stats, "kurtosis"), kurtosis_rotated=weighted_mean(layer_stats, "kurtosis_rotated"),
        max_crest=largest(layer_stats, "max_crest"), max_crest_rotated=largest(layer_stats, "max_crest_rotated"),
        formats=tuple(results), weights=tuple(weight_results), schemes=tuple(pair_schemes(weight_results, results)),
    )


def _layer_stats(st: _Layer) -> ActivationLayer:
    live = st.stat("mean_square") > 0

    def summary(kurtosis: str, crest: str) -> tuple[float | None, float | None]:
        values = st.stat(crest)[live]
        if not live.any() or np.isnan(values).all():  # no rows, or not rotated
            return None, None
        kurt = st.stat(kurtosis)[live].astype(np.float64)
        kurt = kurt[np.isfinite(kurt)]  # a constant row has no kurtosis
        return (float(kurt.mean()) if len(kurt) else None), float(values.max())

    kurtosis, crest = summary("kurtosis", "crest")
    kurtosis_rot, crest_rot = summary("kurtosis_rotated", "crest_rotated")
    return ActivationLayer(
        name=st.name, row_length=st.row_length, rows=int(live.sum()), zero_rows=int((~live).sum()),
        params=st.params, kurtosis=kurtosis, kurtosis_rotated=kurtosis_rot,
        max_crest=crest, max_crest_rotated=crest_rot,
    )
