"""Checks of this round's README claims (task readme34).

Plots: "a legend's very long labels and a panel's long title wrap over lines rather than be cut".
An axis label longer than its panel was neither: `uscl fit ... --plot`'s panel (b) y label
"capacity ρ (weights and activations: √ρ per tensor)" is 288 px tall beside a 166 px panel in a
one-row fit figure, so it ran over the suptitle and 2 px past the figure's top edge (cut).
"""

from __future__ import annotations

import conftest  # noqa: F401  (the shared fixtures)

from gmse_cli.fit.results import FamilyFit, FitResult, RunResidual, SchemeCapacity


def _fit_result() -> FitResult:
    caps = [SchemeCapacity(scheme=f"int{b}", weights=f"int{b}", activations=None, rho=0.2 * b, n_runs=3,
                           stage_gmse=[("quantization", 4.0**-b)]) for b in (2, 3, 4)]
    residuals = [RunResidual(scheme=c.scheme, N=1e6 * (i + 1), D=2e7 * (i + 1) ** 1.5, loss=3.0 + i / 10,
                             predicted=3.01 + i / 10, residual=0.003, rho=c.rho) for i, c in enumerate(caps)]
    return FitResult(model="unified", n_runs=3, n_schemes=3, huber_delta=1e-3, A=1.0, alpha=0.3, B=1.0,
                     beta=0.3, E=1.0, fit_error=0.01, objective=0.0, constants={},
                     families={"quantization": FamilyFit(L=0.62, F=0.73, C=2.8, n_gmse=3)},
                     capacities=caps, residuals=residuals, bootstrap=0, starts=1, converged=True, seed=0,
                     data_files=["runs.jsonl"], notes=[])


def _labels_fit_their_axes(fig, expected: dict[str, str]) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_window_extent(renderer)
        for label, room, along in ((ax.xaxis.label, box.width, "width"), (ax.yaxis.label, box.height, "height")):
            extent = label.get_window_extent(renderer)
            assert getattr(extent, along) <= 1.1 * room + 1, (label.get_text(), getattr(extent, along), room)
            assert extent.y1 <= fig.bbox.y1 and extent.y0 >= fig.bbox.y0, label.get_text()
            assert extent.x0 >= fig.bbox.x0 and extent.x1 <= fig.bbox.x1, label.get_text()
    shown = {" ".join(ax.get_ylabel().split()) for ax in fig.axes if ax.get_visible()}
    for text in expected.values():
        assert text in shown  # wrapped, every word kept


def test_fit_figure_axis_labels_wrap_inside_their_panels():
    from gmse_cli.fit import fit_figure

    fig = fit_figure(_fit_result())
    _labels_fit_their_axes(fig, {"b": "capacity ρ (weights and activations: √ρ per tensor)",
                                 "a": "loss the fitted law predicts (nats per token)"})


def test_a_label_a_little_longer_than_its_axes_is_left_on_one_line():
    from gmse_cli import figures

    with figures.house_style():
        fig, axes = figures.new_figure(7.0, 2.7)
        axes[0][0].set_ylabel("capacity ρ (effective / actual parameters)")  # 6% taller than its axes
        axes[0][0].set_xlabel("storage cost (bits per parameter)")
        figures.freeze_layout(fig)
    assert axes[0][0].get_ylabel() == "capacity ρ (effective / actual parameters)"
    assert axes[0][0].get_xlabel() == "storage cost (bits per parameter)"


def test_a_wrapped_label_keeps_log_scale_on_one_line():
    from gmse_cli import figures

    with figures.house_style():
        fig, axes = figures.new_figure(3.0, 1.6)
        axes[0][0].set_yscale("log")
        axes[0][0].set_ylabel("implied ρ / the law's ρ, a long label for a short panel (log scale)")
        figures.freeze_layout(fig)
    label = axes[0][0].get_ylabel()
    assert "\n" in label and "log scale" in label
