"""Plots checked against what a paper needs: the same figure gives the same file bytes (no
clock in an SVG or a PDF); no plotted capacity is clipped out of its panel's view (fit, rank,
search); no capacities from a decoupled fit that is no law; colour keys name formats, and
series that share a colour differ in dashes or marker shape; a legend of many formats gets
room of its own; a log axis labels more than one tick.

The inputs are made up (capacities far above 1, as a decoupled fit whose alpha came out
negative gives them, or a law with L = 1.3); the checks read what matplotlib draws with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmse_cli import figures
from gmse_cli.fit.results import FamilyFit, FitResult, RunResidual, SchemeCapacity


def _simple_figure():
    with figures.house_style():
        fig, axes = figures.new_figure(3.3, 2.4)
        ax = axes[0][0]
        ax.plot([1, 2, 3], [1, 4, 9], marker="o", label="squares")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        fig.legend()
    return fig


@pytest.mark.parametrize("suffix", [".svg", ".pdf", ".png"])
def test_same_figure_same_bytes(tmp_path, suffix):
    first = figures.save_figure(_simple_figure(), tmp_path / f"a{suffix}").read_bytes()
    second = figures.save_figure(_simple_figure(), tmp_path / f"b{suffix}").read_bytes()
    assert first == second
    # no creation date either: a PDF saved in another second would differ
    assert b"CreationDate" not in first and b"dc:date" not in first


def _result(capacities: list[SchemeCapacity]) -> FitResult:
    residuals = [RunResidual(scheme=c.scheme, N=1e6, D=2e7, loss=3.0 + i / 10, predicted=3.01 + i / 10,
                             residual=0.003, rho=c.rho) for i, c in enumerate(capacities)]
    return FitResult(model="unified", n_runs=len(residuals), n_schemes=len(capacities), huber_delta=1e-3,
                     A=1.0, alpha=0.3, B=1.0, beta=0.3, E=1.0, fit_error=0.01, objective=0.0, constants={},
                     families={"quantization": FamilyFit(L=0.62, F=0.73, C=2.8, n_gmse=3)},
                     capacities=capacities, residuals=residuals, bootstrap=0, starts=1, converged=True, seed=0,
                     data_files=["runs.jsonl"], notes=[])


def test_capacity_panel_shows_every_point_and_bar():
    from matplotlib.collections import LineCollection, PathCollection

    from gmse_cli.fit import fit_figure

    caps = [
        SchemeCapacity(scheme="int4", weights="int4", activations=None, rho=1.21, rho_low=1.1, rho_high=1.4, n_runs=3,
                       stage_gmse=[("quantization", 0.0115)]),
        SchemeCapacity(scheme="int2", weights="int2", activations=None, rho=1.72, n_runs=3, stage_gmse=[("quantization", 0.117)]),
        SchemeCapacity(scheme="W:int2 A:int2", weights="int2", activations="int2", rho=5.12, n_runs=3,
                       stage_gmse=[("quantization", 0.117), ("quantization", 0.117)]),
    ]
    fig = fit_figure(_result(caps))
    ax = fig.axes[1]
    low, high = ax.get_ylim()
    ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)])
    bars = np.concatenate([np.asarray(s)[:, 1] for c in ax.collections if isinstance(c, LineCollection)
                           for s in c.get_segments()])
    # the points as the README's law draws them: rho per scheme, sqrt(rho) per tensor for W x A
    assert sorted(ys) == pytest.approx(sorted([1.21, 1.72, 5.12**0.5]))
    assert sorted(bars) == pytest.approx([1.1, 1.4])
    assert low <= min(ys.min(), bars.min()) and max(ys.max(), bars.max()) < high


def test_rank_shows_capacities_of_a_law_above_one(tmp_path):
    from matplotlib.collections import PathCollection

    from gmse_cli.law import load_law
    from gmse_cli.laws import __file__ as laws_init
    from gmse_cli.rank import rank, rank_figure

    # the shipped law with quantization L = 1.3: a law `uscl fit --out` may write
    text = (Path(laws_init).parent / "paper-llama-c4.toml").read_text(encoding="utf-8")
    old = "[families.quantization.L]\nvalue = 1.0\n"
    assert old in text
    path = tmp_path / "high-l.toml"
    path.write_text(text.replace(old, "[families.quantization.L]\nvalue = 1.3\n"), encoding="utf-8")
    law = load_law(str(path))
    fig = rank_figure(rank(["int8", "bf16"], law=law, rel_err=1e-2), law=law)
    for ax in fig.axes[:2]:
        low, high = ax.get_ylim()
        ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections
                             if isinstance(c, PathCollection) and len(c.get_offsets())])
        assert ys.max() > 1.25  # 1.3 * tanh(0.41 * bits)^1.39 at 8 and 16 bits
        assert low <= ys.min() and ys.max() < high


def test_search_shows_capacities_above_one():
    from matplotlib.collections import PathCollection

    from gmse_cli.search import search_figure
    from gmse_cli.search.results import SearchPoint, SearchResult
    from gmse_cli.spec import resolve_format

    def point(name: str, bits: float, rho: float) -> SearchPoint:
        return SearchPoint(name=name, bits_per_param=bits, gmse=4.0**-bits, gmse_std_err=0.0, gmse_method="exact",
                           rho=rho, rho_std_err=0.0, spec=resolve_format(name), stages=(), source="search")

    front = (point("int4", 4.0, 1.12), point("int8", 8.0, 1.29))
    result = SearchResult(budget=8.0, objective="gaussian", law="high-l", best=front[1], frontier=front,
                          comparisons=(), candidates=2, pruned_by_bound=0, stages_measured=2, refined=2, seconds=0.1,
                          points=tuple((p.name, p.bits_per_param, p.rho) for p in front))
    ax = search_figure(result).axes[0]
    ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)])
    assert sorted(set(ys.round(6))) == [1.12, 1.29]
    assert ys.max() < ax.get_ylim()[1]


def test_fit_legend_names_formats_and_held_curves_differ_without_colour():
    from gmse_cli.fit import fit_figure

    named = "Schéma «2:4+int4» with a long name"  # a runs file's own scheme name
    caps = [
        SchemeCapacity(scheme="int4", weights="int4", activations=None, rho=0.9, n_runs=3,
                       stage_gmse=[("quantization", 0.0115)]),
        SchemeCapacity(scheme="2:4", weights="2:4", activations=None, rho=0.8, n_runs=3,
                       stage_gmse=[("sparsity", 0.05)]),
        SchemeCapacity(scheme=named, weights="2:4+int4", activations=None, rho=0.7, n_runs=3,
                       stage_gmse=[("sparsity", 0.05), ("quantization", 0.0115)]),
    ]
    held = {"quantization": FamilyFit(L=1.0, F=0.41, C=1.39, held=True, n_gmse=0),
            "sparsity": FamilyFit(L=0.985, F=0.305, C=0.501, held=True, n_gmse=0)}
    fig = fit_figure(_result(caps), curves=held, curve_label="law paper-llama-c4")
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "2:4+int4" in legend and named not in legend  # the colour key is the weight format
    curves = [line for line in fig.axes[1].lines if "curve, held" in line.get_label()]
    assert len(curves) == 2
    # same grey: the dash patterns (matplotlib's own record of them) must differ
    assert len({str(line._unscaled_dash_pattern) for line in curves}) == 2


def test_fit_plot_draws_no_capacities_from_a_decoupled_fit_the_command_refuses(run_cli, tmp_path, monkeypatch):
    from matplotlib.collections import PathCollection

    runs = Path(__file__).parents[1] / "examples" / "cpu-law.jsonl"
    refused = run_cli("fit", str(runs), "-m", "decoupled", "--no-heldout")
    assert refused.code == 2 and "alpha" in refused.stderr  # no law: alpha < 0 on these 34 runs

    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: (drawn.append(fig), save(fig, path))[1])
    res = run_cli("fit", str(runs), "-m", "unified", "--no-heldout", "--plot", str(tmp_path / "fit.svg"))
    assert res.code == 0, res.stderr
    panel = drawn[0].axes[1]
    assert not [c for c in panel.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert "no law" in panel.get_title()


def _mse_results(ratios: dict[str, tuple[float, float]]):
    """FormatMse rows of two layers each at the given MSE / GMSE ratios (only what the plot reads)."""
    from gmse_cli.realmse.report import FormatMse, LayerMse

    def layer(name: str, ratio: float):
        return LayerMse.model_construct(name=name, params=4096, mse=0.01 * ratio, gmse=0.01)

    return [FormatMse.model_construct(format=fmt, hadamard=False, ratio=sum(r) / 2, params=8192, sample=1.0,
                                      layers=(layer("model.layers.0.q.weight", r[0]), layer("model.layers.1.q.weight", r[1])))
            for fmt, r in ratios.items()]


def test_mse_ratio_axis_labels_more_than_one_tick_near_one():
    from gmse_cli.realmse import mse_figure

    fig = mse_figure(_mse_results({"int4": (0.95, 1.08), "fp4": (1.02, 0.97)}))
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    labelled = [(t.get_loc(), t.label1.get_text()) for t in ax.xaxis.get_major_ticks()
                if low <= t.get_loc() <= high and t.label1.get_visible() and t.label1.get_text()]
    assert len(labelled) >= 2  # one label cannot give a log scale
    for loc, text in labelled:
        assert float(text) == pytest.approx(loc)


def test_mse_many_formats_legend_gets_room_of_its_own():
    import warnings

    from gmse_cli.realmse import mse_figure

    few = mse_figure(_mse_results({"int4": (0.95, 1.08), "fp4": (1.0, 1.0), "nf4": (1.0, 1.1)}))  # 4 legend lines
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained layout collapsing the axes warns
        many = mse_figure(_mse_results({f"int4-g{32 * k}": (0.9 + 0.01 * k, 1.1) for k in range(1, 41)}))
        many.canvas.draw()
    few.canvas.draw()
    renderer = many.canvas.get_renderer()
    (legend,) = many.legends
    frame = many.axes[0].get_window_extent(renderer)
    assert not legend.get_window_extent(renderer).overlaps(frame)
    # the rows keep the height they have with a legend of the 4 lines the plot is sized for (inches)
    assert frame.height / many.dpi == pytest.approx(few.axes[0].get_window_extent().height / few.dpi, rel=0.25)


def test_mse_formats_differ_in_colour_or_shape():
    from gmse_cli.realmse import mse_figure

    formats = [f"int{b}" for b in range(2, 9)] + [f"int4-g{g}" for g in (32, 64, 128, 256)] + ["fp4", "nf4", "nvfp4"]
    ax = mse_figure(_mse_results({f: (1.0, 1.05) for f in formats})).axes[0]
    looks = {(line.get_color(), line.get_marker(), line.get_markerfacecolor()) for line in ax.lines
             if line.get_label().split(":")[0] in formats}
    assert len(looks) == len(formats)  # 14 formats: more than the palette's 10 colours


def test_drift_panel_says_why_it_has_no_slope_when_tokens_per_parameter_never_vary():
    # The CPU sweep trains every model at 8 tokens per parameter: panel (d)'s points share one
    # x, and the drift report fits no D/N slope; the panel says so instead of a bare column.
    import json

    from gmse_cli.fit import fit, fit_figure
    from gmse_cli.law import load_law
    from gmse_cli.runs import load_runs

    path = Path(__file__).parent.parent / "examples" / "cpu-law.jsonl"
    tpp = [r["tokens"] / r["params"] for r in map(json.loads, path.read_text().splitlines())]
    assert max(tpp) / min(tpp) < 1.001  # the premise, read from the file itself (whole batches)
    result = fit(load_runs([path]), model="unified", base_law=load_law(None), loso=False, profile=False)
    assert [s.regressor for s in result.drift.slopes] == ["log N"]
    titles = [ax.get_title() for ax in fit_figure(result).axes]
    assert any(t.startswith("(c)") and "slope on log N" in t for t in titles)
    assert any(t.startswith("(d)") and "no slope: D/N does not vary within a scheme" in t for t in titles)


@pytest.mark.parametrize("options", [["--fix", "E=1.3"]])  # --prior and --weigh-schemes take the same path
def test_fit_plot_capacity_points_are_the_decoupled_fit_under_the_same_options(run_cli, tmp_path, monkeypatch,
                                                                               shared_data, options):
    # The points beside a unified fit came from a decoupled fit that ignored --fix, --prior and
    # --weigh-schemes: with E held at 1.3 they were the free fit's capacities.
    import json

    import gmse_cli.fit

    quest = str(shared_data / "quest_runs.json")
    drawn = {}
    monkeypatch.setattr(gmse_cli.fit, "plot_fit", lambda result, path, **kw: drawn.update(kw))
    res = run_cli("fit", quest, "-m", "unified", "--no-heldout", *options, "--plot", str(tmp_path / "fit.svg"))
    assert res.code == 0, res.stderr
    alone = run_cli("fit", quest, "-m", "decoupled", "--no-heldout", *options, "--json")
    assert alone.code == 0, alone.stderr
    expected = {c["scheme"]: c["rho"] for c in json.loads(alone.stdout)["results"][0]["capacities"]}
    free = run_cli("fit", quest, "-m", "decoupled", "--no-heldout", "--json")
    unlike = {c["scheme"]: c["rho"] for c in json.loads(free.stdout)["results"][0]["capacities"]}
    got = {c.scheme: c.rho for c in drawn["points"]}
    assert got == pytest.approx(expected, rel=1e-9)
    assert max(abs(got[k] / unlike[k] - 1) for k in got) > 1e-3  # the options do move them
