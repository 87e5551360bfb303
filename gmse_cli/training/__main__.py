"""``python -m gmse_cli.training ARGS`` runs ``uscl ARGS`` (the entry point of torchrun workers)."""

import sys

from gmse_cli.cli import main

main(sys.argv[1:])
