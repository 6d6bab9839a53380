"""Run the ``uns`` command line from a checkout: ``python cli.py --help``.

The command line is :mod:`uns.cli`; an installed ``uns`` has the console script
``uns`` (and ``python -m uns``) instead.  This script is not installed.
"""

from uns.cli.app import main

if __name__ == "__main__":
    main()
