"""The user entry points :func:`fit`, :func:`load` and :func:`reflow` (also ``scdit.fit`` ...).

Layers above the model (``scdit.pipelines``) import them from here.
"""

from ._api import fit, load
from ._reflow import reflow

__all__ = ["fit", "load", "reflow"]
