"""`python -m gmse_cli` runs the `uscl` command line."""

from gmse_cli.program import main

main()
