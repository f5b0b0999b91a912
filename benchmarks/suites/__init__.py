"""scdit's maintained benchmark suites; run them with ``python benchmarks/run.py``."""
