"""The crash soak: a broker process SIGKILLed under load, restarted, drained and checked.

``python -m tests.io.soak --help``; ``make soak`` for the long profile. See
docs/reliability.md.
"""
