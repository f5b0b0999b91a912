"""``python -m scdit``: the command-line interface (see :mod:`scdit._cli`)."""

from ._cli import main

raise SystemExit(main())
