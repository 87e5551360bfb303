"""What the library says while it works: progress bars and status lines, on stderr.

Everything here draws on the one stderr console of :mod:`gmse_cli.messages` (where notes,
warnings and plain lines come from too). Library code decides *what* is slow and how to count
it; its caller decides *whether* to show it by passing ``enabled`` (the CLI shows bars under
``--json`` too, as whole plain lines where stderr is no terminal; a library user gets silence
unless asking). Nothing here imports from above
the ground floor, so every room can report progress::

    with task("GMSE", total=len(formats), enabled=show) as bar:
        for fmt in formats:
            bar.update(detail=fmt.display_name)   # shown after the label
            ...
            bar.advance()

    with status("fitting", enabled=show):
        ...

Work a machine does once (a numba kernel compiled, a VQ codebook trained) is announced by
:func:`once` whenever the command line has turned notices on (:func:`enable_notices`), even
under ``--json`` or with stderr piped: without a word, a first run looks hung.
:func:`watch_compiles` routes numba's own compile events there.
"""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

from gmse_cli.errors import visible

# The console and the one-line messages live in gmse_cli.messages; they are named here too, where
# the library's callers have always found them.
from gmse_cli.messages import (
    cache_note,
    clear_cache_note,
    escape_text,
    info,
    note,
    stderr_console,
    stderr_is_terminal,
    stream_is_terminal,
    warning,
)

__all__ = [
    "stderr_console",
    "stderr_is_terminal",
    "stderr_is_interactive",
    "stream_is_terminal",
    "Task",
    "task",
    "status",
    "note",
    "warning",
    "cache_note",
    "clear_cache_note",
    "info",
    "once",
    "enable_notices",
    "watch_compiles",
]

# The bars on screen now, innermost last, with their named fields: a notice joins the
# innermost as a row of its own (rich shows one live display at a time).
_live: list[tuple[Any, tuple[str, ...]]] = []
_notices = False
_said: set[str] = set()


def _describe(label: str, detail: str | None, *, plain: bool = False) -> str:
    """The bar's text: the label, then the detail; never read as rich markup (``plain``: for a
    line printed without markup, only control characters made visible)."""
    text = f"{label} {detail}" if label and detail else detail or label
    return visible(text) if plain else escape_text(text)


def stderr_is_interactive() -> bool:
    """Whether a bar can be redrawn in place on stderr: a terminal that is not ``TERM=dumb``
    (rich draws nothing at all on a dumb one). Elsewhere a bar is whole lines (:class:`_Lines`)."""
    return stderr_is_terminal() and stderr_console().is_interactive


class Task:
    """A handle on one progress bar; every method does nothing when the bar is disabled."""

    def __init__(self, label: str, bar: Any = None, task_id: Any = None) -> None:
        self._label = label
        self._bar = bar
        self._id = task_id
        self._plain = isinstance(bar, _Lines)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        detail: str | None = None,
        **fields: str,
    ) -> None:
        """Set the count done, the total, the text after the label, or named column values."""
        if self._bar is None:
            return
        kwargs: dict[str, Any] = dict(fields)
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if detail is not None:
            kwargs["description"] = _describe(self._label, detail, plain=self._plain)
        self._bar.update(self._id, **kwargs)

    def advance(self, amount: float = 1, *, detail: str | None = None) -> None:
        """Count ``amount`` more done (and optionally change the text after the label)."""
        if self._bar is None:
            return
        if detail is not None:
            self._bar.update(self._id, description=_describe(self._label, detail, plain=self._plain))
        self._bar.advance(self._id, amount)

    def log(self, message: str) -> None:
        """One plain line printed above the bar (nothing when the bar is disabled)."""
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)


# Where a bar cannot be redrawn in place (stderr a file, a pipe, a CI log, a Slurm .err file,
# TERM=dumb), a bar is whole plain lines: the first once it has run FIRST_LINE_S (work shorter
# than that prints nothing), then one every LINE_EVERY_S, and a last one when it ends.
FIRST_LINE_S = 0.5
LINE_EVERY_S = 10.0


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Lines:
    """A bar as whole lines on stderr: the part of rich's Progress a :class:`Task` calls
    (``update``, ``advance``, ``console``), printed from a thread of its own so that one long
    step still shows it is alive. Only the innermost bar speaks (a bar inside a bar)."""

    def __init__(self, description: str, total: float | None, completed: float, count: str,
                 columns: Sequence[str], names: Sequence[str]) -> None:
        self.console = stderr_console()
        self.description, self.total, self.completed = description, total, completed
        self._count, self._columns = count, tuple(columns)
        self._fields = dict.fromkeys(names, "-")
        self._started_at, self._start_count = 0.0, completed
        self._printed = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="uscl-progress-lines", daemon=True)

    def update(self, _task_id: Any = None, *, description: str | None = None, completed: float | None = None,
               total: float | None = None, **fields: Any) -> None:
        with self._lock:
            if description is not None:
                self.description = description
            if total is not None:
                self.total = total
            if completed is not None:
                self.completed = completed
            self._fields.update({k: str(v) for k, v in fields.items()})

    def advance(self, _task_id: Any = None, amount: float = 1) -> None:
        with self._lock:
            self.completed += amount

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._thread.start()

    def stop(self, ended: bool) -> None:
        """Stop the thread; after work that ran long enough to print, say it is done (not after
        an interrupt or error: the command's own line says what happened)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if ended and (self._printed or time.monotonic() - self._started_at >= FIRST_LINE_S):
            self._say(done=True)

    def line(self, *, done: bool = False) -> str:
        """The bar as one line: ``label: done/total (pct%), elapsed, about ETA left``."""
        with self._lock:
            total, completed, fields = self.total, self.completed, dict(self._fields)
            description = self.description.removesuffix(" ...").rstrip(": ")
        elapsed = time.monotonic() - self._started_at
        parts = []
        if self._count != "none" and total:
            share = 100.0 * min(completed / total, 1.0)
            if self._count == "percent":
                parts.append(f"{share:.0f}%")
            else:
                parts.append(f"{completed:,.0f}/{total:,.0f} ({share:.0f}%)")
        elif self._count == "steps" and completed:
            parts.append(f"{completed:,.0f}")
        parts.extend(template.format(**fields) for template in self._columns)
        if done:
            parts.append(f"done in {_clock(elapsed)}")
        else:
            parts.append(f"{_clock(elapsed)} elapsed")
            moved = completed - self._start_count
            if total and 0 < moved and completed < total:
                parts.append(f"about {_clock(elapsed * (total - completed) / moved)} left")
        return f"{description}: {', '.join(parts)}"

    def _say(self, *, done: bool = False) -> None:
        self.console.print(self.line(done=done), markup=False, highlight=False, soft_wrap=True)
        self._printed = True

    def _beat(self) -> None:
        wait = FIRST_LINE_S
        while not self._stopping.wait(wait):
            innermost = _live[-1:]  # one read: the main thread may pop the last bar meanwhile
            if innermost and innermost[0][0] is self:
                self._say()
            wait = LINE_EVERY_S


@contextmanager
def task(
    label: str,
    total: float | None,
    *,
    enabled: bool = True,
    completed: float = 0,
    count: Literal["steps", "percent", "none"] = "steps",
    columns: Sequence[str] = (),
    eta: bool = False,
    keep: bool = False,
) -> Iterator[Task]:
    """A progress bar on stderr for the duration of the ``with`` block (silent when disabled).

    ``count``: show ``done/total``, a percentage (for totals that are not steps, such as
    parameters), or nothing (a step of unknown length: see :func:`status`). ``columns``: extra text columns over named fields, e.g. ``"loss {loss}"``;
    each field shows ``-`` until :meth:`Task.update` sets it. ``eta``: the time remaining
    instead of the time elapsed. ``keep``: leave the finished bar on screen (a training run)
    instead of erasing it.
    """
    if not enabled:
        yield Task(label)
        return
    names = [name for template in columns for _, name, _, _ in string.Formatter().parse(template) if name]
    if not stderr_is_interactive():
        # A log file, a pipe, CI, a Slurm .err file, TERM=dumb: whole lines, a few a minute.
        lines = _Lines(_describe(label, None, plain=True), total, completed, count, columns, names)
        _live.append((lines, tuple(names)))
        lines.start()
        ended = False
        try:
            yield Task(label, lines, 0)
            ended = True
        finally:
            _live.remove((lines, tuple(names)))
            lines.stop(ended)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if _live:
        # A bar inside a bar (a kernel compiled while formats are measured): one more row of
        # the display on screen, which keeps its own columns.
        outer, outer_names = _live[-1]
        row = outer.add_task(_describe(label, None), total=total, completed=completed,
                             **dict.fromkeys(outer_names, ""))
        try:
            yield Task(label, outer, row)
        finally:
            outer.remove_task(row)
        return
    shown = [
        TextColumn(template.format(**{n: f"{{task.fields[{n}]}}" for n in names})) for template in columns
    ]
    tally = {"steps": [MofNCompleteColumn()], "percent": [TextColumn("{task.percentage:>3.0f}%")], "none": []}[count]
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), *tally, *shown,
        TimeRemainingColumn() if eta else TimeElapsedColumn(),
        console=stderr_console(), transient=not keep,
    )
    task_id = bar.add_task(_describe(label, None), total=total, completed=completed, **dict.fromkeys(names, "-"))
    bar.start()
    _live.append((bar, tuple(names)))
    try:
        yield Task(label, bar, task_id)
    finally:
        _live.pop()
        bar.stop()


def status(message: str, *, enabled: bool = True) -> AbstractContextManager[Any]:
    """A one-line bar without a count on stderr while a slow step of unknown length runs (a
    fit); it is a :func:`task`, so a bar the step starts inside it (held-out refits, a kernel
    compiled) joins it as a row instead of fighting it for the screen."""
    if not enabled:
        return nullcontext()
    return task(message, None, count="none")



def enable_notices(enabled: bool = True) -> None:
    """Turn :func:`once` notices on (the command line does) or off (a library's default)."""
    global _notices
    _notices = enabled


@contextmanager
def once(
    what: str, *, total: float | None = None, estimate: str | None = None, warning: str | None = None
) -> Iterator[Task]:
    """Announce slow work a machine does once, such as compiling a kernel, for the ``with``
    block: one line on stderr naming ``what`` (how long it will take, ``estimate``, such as
    ``"about 40 minutes"``, and a ``warning`` after it), with a moving bar on a terminal
    (pulsing, or counting to ``total``). Silent unless :func:`enable_notices` turned notices on."""
    if not _notices:
        yield Task(what)
        return
    text = f"{what} ({estimate + ', ' if estimate else ''}once per machine){'; ' + warning if warning else ''}"
    if not stderr_is_interactive():
        if text not in _said:  # piped: one line, not one per kernel
            _said.add(text)
            info(f"{text} ...")
        yield Task(what)
        return
    from rich.errors import LiveError

    manager = task(text, total)
    try:
        bar = manager.__enter__()
    except LiveError:  # a spinner of another kind holds the terminal (older rich): say it plainly
        info(f"{text} ...")
        yield Task(what)
        return
    try:
        yield bar
    finally:
        manager.__exit__(None, None, None)


_compile_depth = 0
_compile_notice: AbstractContextManager[Any] | None = None
_watching = False


def watch_compiles() -> None:
    """Announce every numba compilation through :func:`once` from now on (imports numba; call
    it where kernels are about to run). Loading a kernel from numba's disk cache is silent."""
    global _watching
    if _watching:
        return
    from numba.core import event

    class _Compiles(event.Listener):
        # Compilations nest (a kernel compiles the functions it calls): one notice per outermost.
        def on_start(self, ev: Any) -> None:
            global _compile_depth, _compile_notice
            _compile_depth += 1
            if _compile_depth == 1 and _notices:
                _compile_notice = once("compiling numba kernels")
                _compile_notice.__enter__()

        def on_end(self, ev: Any) -> None:
            global _compile_depth, _compile_notice
            _compile_depth -= 1
            if _compile_depth == 0 and _compile_notice is not None:
                notice, _compile_notice = _compile_notice, None
                notice.__exit__(None, None, None)

    event.register("numba:compile", _Compiles())
    _watching = True
