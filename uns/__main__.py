"""``python -m uns``: the command line, as the console script ``uns`` runs it."""

from uns.cli.app import main

main()
