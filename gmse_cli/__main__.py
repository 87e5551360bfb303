"""`python -m gmse_cli` runs the `uscl` command line."""

try:
    from gmse_cli.cli import run
except KeyboardInterrupt:  # Ctrl-C while the command line loads (typer, click: about 0.1 s)
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("aborted", file=sys.stderr)
    raise SystemExit(130) from None

run()
