"""``python -m scdit.demo``: the end-to-end demo, implemented in :mod:`scdit.pipelines.demo`."""

import sys

from .pipelines.demo import (
    CELLS_PER_CONDITION,
    CONDITION_KEY,
    CONTROL,
    FAST,
    FAST_REFLOW,
    FIT,
    REFLOW,
    load_data,
    main,
    predict_held_out,
    run_demo,
)

__all__ = ["CELLS_PER_CONDITION", "CONDITION_KEY", "CONTROL", "FAST", "FAST_REFLOW", "FIT",
           "REFLOW", "load_data", "main", "predict_held_out", "run_demo"]

if __name__ == "__main__":
    sys.exit(main())
