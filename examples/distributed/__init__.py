"""Distributed mode: ``python -m examples.distributed broker | publisher [N] | consumer``."""
