"""The scdit version (``scdit.__version__``), importable by any layer."""

__version__ = "0.1.0"
