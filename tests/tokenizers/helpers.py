"""Shared helpers of the tokenizer tests."""

from __future__ import annotations

import json

import numpy as np

from scdit.tokenizers import (
    tokenizer_from_state,
)


def round_trip(tok):
    meta, arrays = tok.state()
    meta = json.loads(json.dumps(meta))  # must be JSON-able
    return tokenizer_from_state(meta, {k: np.asarray(v) for k, v in arrays.items()})
