"""Single-process embedded mode: ``python -m examples.embedded [STORAGE_URL]``."""
