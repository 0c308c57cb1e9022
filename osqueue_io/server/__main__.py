"""``python -m osqueue_io.server``: run the broker (see ``--help``)."""

from osqueue_io.server.cli import exit_process, main

exit_process(main())
