"""``python -m osqueue_io.worker``: run a worker (see ``--help`` and docs/lifecycle.md)."""

from osqueue_io.runner.cli import main
from osqueue_io.server.cli import exit_process

# exit_process (os._exit): a handler thread that never returns must not hold the
# process open; its job has already been released.
exit_process(main())
