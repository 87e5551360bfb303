"""Plots checked as a paper's reviewer reads them (task plots34): legend text keeps the house
style's 7 pt (long labels wrap rather than shrink the font to 5.6 pt), a long panel title wraps
inside the figure instead of running past its edge, every log axis says it is one, and the
formats of ``uscl mse`` differ in marker shape as well as colour (greyscale prints).

The checks read what matplotlib draws: the texts' font sizes and extents after a draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmse_cli import figures
from gmse_cli.fit.results import FamilyFit, FitResult, RunResidual, SchemeCapacity

HOUSE_PT = 7.0  # the smallest text the house style draws (ticks, legends)


def _legend_sizes(fig) -> list[float]:
    return [t.get_fontsize() for legend in fig.legends for t in legend.get_texts() if t.get_text()]


def _outside(fig) -> list[str]:
    """The titles (the figure's and each panel's) that run past the figure's left or right edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [*fig.texts, *(ax.title for ax in fig.axes if ax.get_visible())]
    out = []
    for t in titles:
        box = t.get_window_extent(renderer)
        if t.get_text() and (box.x0 < fig.bbox.x0 - 0.5 or box.x1 > fig.bbox.x1 + 0.5):
            out.append(t.get_text())
    return out


def test_wrap_text_breaks_at_the_constants_and_keeps_every_word():
    label = "quantization and vq curve: L 1, F 0.41, C 1.39 × ρ(int8) = 0.989"
    wrapped = figures.wrap_text(label, 45)
    assert wrapped.split("\n") == ["quantization and vq curve:", "L 1, F 0.41, C 1.39 × ρ(int8) = 0.989"]
    for width in (20, 30, 40, 60):
        lines = figures.wrap_text(label, width).split("\n")
        assert " ".join(lines) == label
        assert all(len(line) <= width for line in lines)
    assert figures.wrap_text("short", 10) == "short"
    assert figures.wrap_text("unbreakable-word-longer-than-width x", 10).split("\n") == [
        "unbreakable-word-longer-than-width", "x"]


def test_legend_of_long_labels_wraps_instead_of_shrinking_its_font():
    # A legend wider than the figure took the font down to x-small (5.6 pt at the house style's
    # 8 pt): unreadable in print. Wrapping the long labels fits it at 7 pt.
    with figures.house_style():
        fig, axes = figures.new_figure(7.0, 4.0)
        ax = axes[0][0]
        lines = [ax.plot([0, 1], [i, i], label=f"family {i} curve, held (law paper-llama-c4): L 1, F 0.41, C 1.39")[0]
                 for i in range(3)]
        kinds = [ax.plot([0], [0], "o", label=f"weights and activations, Hadamard-rotated {i}")[0] for i in range(4)]
        figures.figure_legend(fig, [("formats", [(h, h.get_label()) for h in kinds]),
                                    ("lines", [(h, h.get_label()) for h in lines]),
                                    ("more", [(h, h.get_label() + " again") for h in kinds])])
        figures.freeze_layout(fig)
    assert min(_legend_sizes(fig)) >= HOUSE_PT
    (legend,) = fig.legends
    assert legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
    shown = [t.get_text() for t in legend.get_texts() if t.get_text()]
    # every word of every label is still there, each label's first line beside its handle
    for h in lines:
        assert h.get_label() in " ".join(shown) or all(w in " ".join(shown) for w in h.get_label().split())


def test_rank_with_activations_keeps_its_legend_at_seven_points():
    # `uscl rank --act int8 --plot`: the curves' labels carry "x rho(int8) = 0.989", and the
    # legend of the whole catalog came out at 5.55 pt.
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank, rank_figure
    from gmse_cli.spec import catalog

    law = load_law(None)
    items = [f for f in catalog().values() if all(fam in law.families for fam in f.families)]
    fig = rank_figure(rank(items, law=law, act="int8", rel_err=1e-2))
    fig.canvas.draw()
    assert min(_legend_sizes(fig)) >= HOUSE_PT
    assert not _outside(fig)


def _result(capacities: list[SchemeCapacity]) -> FitResult:
    residuals = [RunResidual(scheme=c.scheme, N=1e6 * (i + 1), D=2e7 * (i + 1) ** 1.5, loss=3.0 + i / 10,
                             predicted=3.01 + i / 10, residual=0.003, rho=c.rho) for i, c in enumerate(capacities)]
    return FitResult(model="unified", n_runs=len(residuals), n_schemes=len(capacities), huber_delta=1e-3,
                     A=1.0, alpha=0.3, B=1.0, beta=0.3, E=1.0, fit_error=0.01, objective=0.0, constants={},
                     families={"quantization": FamilyFit(L=0.62, F=0.73, C=2.8, n_gmse=3)},
                     capacities=capacities, residuals=residuals, bootstrap=0, starts=1, converged=True, seed=0,
                     data_files=["runs.jsonl"], notes=[])


def _caps() -> list[SchemeCapacity]:
    return [SchemeCapacity(scheme=f"int{b}", weights=f"int{b}", activations=None, rho=0.2 * b, n_runs=3,
                           stage_gmse=[("quantization", 4.0**-b)]) for b in (2, 3, 4)]


def test_fit_capacity_panel_title_wraps_inside_the_figure():
    # `uscl fit examples/cpu-law.jsonl --model unified --plot`: panel (b)'s note "points: none
    # (the decoupled fit gives alpha = -0.3658: no law)" ran past the figure's right edge.
    from gmse_cli.fit import fit_figure

    note = "none (the decoupled fit gives alpha = -0.3658: no law, so no capacities of its own are drawn)"
    fig = fit_figure(_result(_caps()), points_note=note)
    assert not _outside(fig)
    title = fig.axes[1].get_title()
    assert " ".join(title.split()) == " ".join(f"(b) capacity against GMSE points: {note}".split())
    assert "\n" in title.split("points:", 1)[1]  # the note itself was broken


def test_every_log_axis_says_so():
    # rank's and fit's log axes (GMSE, bits per parameter, N, D/N, the drift ratio) did not say
    # they are logarithmic; mse's did: one style for every command.
    from gmse_cli.fit import fit_figure
    from gmse_cli.rank import rank, rank_figure
    from gmse_cli.realmse.report import FormatMse, LayerMse

    layer = LayerMse.model_construct(name="model.layers.0.q.weight", params=4096, mse=0.012, gmse=0.01)
    mse = FormatMse.model_construct(format="int4", hadamard=False, ratio=1.2, params=4096, sample=1.0, layers=(layer,))
    from gmse_cli.fit import fit
    from gmse_cli.law import load_law
    from gmse_cli.realmse import mse_figure
    from gmse_cli.runs import load_runs

    cpu = load_runs([Path(__file__).parents[1] / "examples" / "cpu-law.jsonl"])  # a fit with drift panels
    drifted = fit(cpu, model="unified", base_law=load_law(None), loso=False, profile=False)
    figs = [rank_figure(rank(["int2", "int4", "int8", "2:4+int4"], rel_err=1e-2)), fit_figure(drifted),
            mse_figure([mse])]
    logs = 0
    for fig in figs:
        for ax in fig.axes:
            for name in "xy":
                label = getattr(ax, f"get_{name}label")()
                if ax.get_visible() and getattr(ax, f"get_{name}scale")() == "log":
                    logs += 1
                    assert "log scale" in label, label
                if ax.get_visible():
                    assert label, f"{ax.get_title()!r}: no {name} label"
    assert logs == 8  # rank's two; fit's GMSE, N, D/N and the two drift ratios; mse's ratio


def test_mse_formats_differ_in_shape_not_colour_alone():
    # The four formats of `uscl mse -f int4 -f fp4 -f int8 -f nf4-dq` were four colours of one
    # circle: one grey dot each in a greyscale print.
    from gmse_cli.realmse import mse_figure
    from gmse_cli.realmse.report import FormatMse, LayerMse

    def result(fmt: str, hadamard: bool) -> FormatMse:
        layer = LayerMse.model_construct(name="model.layers.0.q.weight", params=4096, mse=0.012, gmse=0.01)
        name = f"had128+{fmt}" if hadamard else fmt
        return FormatMse.model_construct(format=name, hadamard=hadamard, ratio=1.2, params=4096, sample=1.0,
                                         layers=(layer,))

    formats = ["int4", "fp4", "int8", "nf4-dq"]
    ax = mse_figure([result(f, h) for f in formats for h in (False, True)]).axes[0]
    shape = {}
    for line in ax.lines:
        name = line.get_label().split(":")[0]
        if name in formats:
            shape[name] = line.get_marker()
        elif name.startswith("had128+"):  # the rotated one: the same shape, open
            assert line.get_marker() == shape[name.removeprefix("had128+")]
            assert line.get_markerfacecolor() in ("white", "w", (1.0, 1.0, 1.0, 1.0))
    assert len(set(shape.values())) == len(formats)


@pytest.mark.parametrize("n", [10, 25])
def test_mse_shapes_and_colours_never_repeat_together(n):
    from gmse_cli.realmse import mse_figure
    from gmse_cli.realmse.report import FormatMse, LayerMse

    layer = LayerMse.model_construct(name="model.layers.0.q.weight", params=4096, mse=0.012, gmse=0.01)
    results = [FormatMse.model_construct(format=f"int4-g{32 * (k + 1)}", hadamard=False, ratio=1.2, params=4096,
                                         sample=1.0, layers=(layer,)) for k in range(n)]
    ax = mse_figure(results).axes[0]
    looks = [(line.get_color(), line.get_marker()) for line in ax.lines if line.get_label().startswith("int4-g")]
    assert len(looks) == n and len(set(looks)) == n
    assert len({m for _, m in looks}) == min(n, len(figures.MARKERS))
    assert np.isfinite([line.get_xdata()[0] for line in ax.lines if line.get_label().startswith("int4-g")]).all()
