"""What `uscl train` prints: its planned runs (`--dry-run`, with time estimates) and its
finished runs' records, as a table, JSON or CSV."""

from __future__ import annotations

from pathlib import Path

__all__ = ["records_for", "render_records", "flops_per_second", "render_plans", "plan_device", "duration"]


def records_for(out: Path, runs) -> list:
    from gmse_cli.training.results import load_records

    keys = {cfg.run_key() for cfg in runs}
    return [r for r in load_records(out) if r.run_key in keys] if out.exists() else []


def _printed_as_data(items, output: str) -> bool:
    """Print ``items`` (pydantic models) as JSON or CSV when ``output`` asks for it; False for a table."""
    if output not in ("json", "csv"):
        return False
    from gmse_cli.cli.output import print_csv, print_json

    (print_json if output == "json" else print_csv)([item.model_dump(mode="json") for item in items])
    return True


def render_records(records, *, output: str) -> None:
    if _printed_as_data(records, output):
        return
    rows = [("run", "N", "D", "val_loss", "status", "wall_s")]
    for r in records:
        loss = f"{r.val_loss:.4f}" if r.val_loss is not None else "-"
        rows.append((r.name, f"{r.params:,}", f"{r.tokens:,}", loss, r.status, f"{r.wall_time_s:.0f}"))
    _print_rows(rows)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    """Aligned plain-text columns on stdout (the shared text table: run names fold and the
    least needed columns go to fit COLUMNS; a pipe without COLUMNS gets whole lines)."""
    from gmse_cli.cli.texttable import TextTable, print_lines

    table = TextTable(optional=["done", "FLOPs", "tokens/step", "steps"])
    for i, header in enumerate(rows[0]):
        table.add_column(header, "left" if i == 0 else "right")
    for r in rows[1:]:
        table.add_row(*r)
    print_lines(table)


# Dense bf16 peak of an H100 SXM (NVIDIA datasheet), assumed when planning for CUDA without one.
_H100_BF16 = 989e12
# The share of peak a small transformer's training step sustains (QuEST-size models reach
# roughly 30-50% MFU on H100s); a planning figure, not a measurement.
_ASSUMED_MFU = 0.4


def flops_per_second(device: str, processes: int) -> tuple[float | None, str]:
    """Rough sustained training FLOP/s for time estimates, and where the number comes from."""
    try:
        import time

        import torch
    except ImportError:
        return None, "no torch: no time estimate; pip install 'uscl[train]' to time steps and train"
    if device.startswith("cuda") and not torch.cuda.is_available():
        rate = _ASSUMED_MFU * _H100_BF16 * processes
        return rate, f"assumed H100s: {processes} x 989 TFLOP/s bf16 x {_ASSUMED_MFU:.0%}"
    use_cuda = device != "cpu" and torch.cuda.is_available()
    dev = torch.device("cuda" if use_cuda else "cpu")
    dtype = torch.bfloat16 if use_cuda else torch.float32
    n = 4096 if use_cuda else 512
    a = torch.randn(n, n, device=dev, dtype=dtype)
    reps = 0
    (a @ a).sum().item()
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        (a @ a).sum().item()
        reps += 1
    measured = 2 * n**3 * reps / (time.perf_counter() - start)
    where = torch.cuda.get_device_name() if use_cuda else "this CPU"
    return _ASSUMED_MFU * measured * processes, (
        f"a timed {n}x{n} matmul on {where} x {_ASSUMED_MFU:.0%}" + (f" x {processes} processes" if processes > 1 else "")
    )


def render_plans(name: str, plans, *, output: str, flops: float | None, source: str) -> None:
    from gmse_cli.cli.console import err_console

    if _printed_as_data(plans, output):
        return
    rows = [("run", "N", "D", "tokens/step", "steps", "FLOPs", "est_time", "done")]
    total_flops = 0.0
    total_s = 0.0
    for p in plans:
        total_flops += p.plan.flops
        total_s += 0.0 if p.done else (p.est_seconds or 0.0)
        rows.append((
            p.plan.name, f"{p.plan.params:,}", f"{p.plan.tokens:,}", f"{p.plan.tokens_per_step:,}",
            f"{p.plan.steps:,}", f"{p.plan.flops:.3g}", duration(p.est_seconds), "yes" if p.done else "no",
        ))
    _print_rows(rows)
    todo = sum(not p.done for p in plans)
    rate = f" at {flops:.3g} FLOP/s ({source})" if flops else (f" (from {source})" if source else "")
    # no estimate for a run to do (no torch, no FLOP rate): the time left is unknown, not 0 s
    left = duration(None if any(not p.done and p.est_seconds is None for p in plans) else total_s)
    err_console.print(
        f"sweep '{name}': {len(plans)} runs ({todo} to do), {total_flops:.3g} FLOPs, "
        f"about {left} left{rate}",
        highlight=False, markup=False,
    )


def plan_device(device: str) -> str | None:
    """The device --dry-run times steps on (what the runs would use), or None when that device
    is not here (planning a GPU sweep from a login node: FLOPs at an assumed rate it is), or
    torch is not installed (a core install plans its runs with no time estimate)."""
    try:
        import torch
    except ImportError:
        return None

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None
    return device


def duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: 45 s, 12 min, 3.5 h, 4.2 days, 120 years."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):,.0f} years"
