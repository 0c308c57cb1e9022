"""High availability: ``python -m examples.ha broker PORT | client [N]``."""
