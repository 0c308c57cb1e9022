"""``python -m osqueue_io.cli``: the ``osqueue`` command (see ``--help``)."""

from osqueue_io.cli.app import run

run()
