"""Runnable examples: `python -m examples.embedded`, `python -m examples.distributed ...`."""
