"""The `uscl` program and `python -m gmse_cli`: loads the command line, then runs it.

A Ctrl-C while the command line loads (typer and click, about 0.1 s) is the one line "aborted"
and exit 130, as a Ctrl-C anywhere later is; the installed `uscl` script calls :func:`main`
here too, so no handler-less import of gmse_cli.cli comes first.
"""

from __future__ import annotations


def main() -> None:
    try:
        from gmse_cli.cli import run
    except KeyboardInterrupt:
        import signal
        import sys

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while saying so
        print("aborted", file=sys.stderr)
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
