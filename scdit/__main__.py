"""``python -m scdit``: the command-line interface (see :func:`scdit.pipelines.main`)."""

from .pipelines import main

raise SystemExit(main())
