"""``python -m osqueue_io.runner``: run a worker (see ``--help``)."""

from osqueue_io.runner.cli import main
from osqueue_io.server.cli import exit_process

# exit_process skips the interpreter's finalization, which would otherwise wait for the
# thread of a plain handler still running after the grace period (its job already
# released) and can trip over obstore's I/O threads (see exit_process).
exit_process(main())
