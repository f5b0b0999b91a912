"""The user entry points :func:`fit` and :func:`load` (also ``scdit.fit`` / ``scdit.load``).

Layers above the model (``scdit.pipelines``) import them from here.
"""

from ._api import fit, load

__all__ = ["fit", "load"]
