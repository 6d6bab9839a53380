"""The command line, the library's first face: typer commands that parse, call the
library (:mod:`uns.lake`, :mod:`uns.batch`, :mod:`uns.audit`, ...) and print.

The application is :data:`uns.cli.app.app`; the console script ``uns`` runs
:func:`uns.cli.app.main`.  Nothing here holds logic that a test of the library
could not reach (tests/test_architecture.py).
"""
