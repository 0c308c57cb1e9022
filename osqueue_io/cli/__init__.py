"""The ``osqueue`` command line: look at a queue in its storage, change it through its
broker, read its archive, run a broker or a worker. See docs/operations.md, "Command
line", and ``osqueue --help``."""

from osqueue_io.cli.app import cli, main, run

__all__ = ["cli", "main", "run"]
