"""Fixtures of the dataset tests: the local HTTP server and its registered test card."""

from tests.datasets.local_server import card, h5ad_bytes, server  # noqa: F401
