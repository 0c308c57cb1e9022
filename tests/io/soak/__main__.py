"""``python -m tests.io.soak``: run the crash soak (see ``--help``)."""

import os
import sys

from tests.io.soak.driver import main

code = main()
# obstore's Tokio threads may panic while the interpreter finalizes (see
# osqueue_io.server.cli.exit_process); everything is written by now.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
