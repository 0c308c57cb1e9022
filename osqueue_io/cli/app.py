"""``osqueue``: the command line (a console script; also ``python -m osqueue_io.cli``).

:func:`main` runs one command and returns its exit code (:mod:`.exits`); :func:`run`,
the console script, exits the process with it. Commands that read work on the storage
directly (:mod:`.read_commands`, :mod:`.archive_commands`); commands that change the queue go
through the owning broker (:mod:`.change_commands`); ``server`` and ``worker`` hand their
arguments, unchanged, to the broker's and the worker runner's own command lines.

Every failure is one line on stderr, ``osqueue <command>: error: <what to fix>``, never a
traceback (``OSQUEUE_TRACEBACK=1`` shows one for an unexpected error, which is a bug).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from osqueue_core import OsqueueError
from osqueue_io.cli.archive_commands import archive_cat, archive_ls
from osqueue_io.cli.change_commands import cancel, dead_purge, dead_redrive
from osqueue_io.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    exit_code_of,
)
from osqueue_io.cli.read_commands import dead_ls, jobs_ls, jobs_show, stats

__all__ = ["cli", "main", "run"]

#: The longest error line printed (messages quote untrusted text briefly already; this
#: bounds what click itself may echo back, such as an unknown command's name).
MAX_ERROR_LINE = 400

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=_CONTEXT)
def cli() -> None:
    """osqueue: look at a queue, change it through its broker, read its archive, or run
    a broker or a worker.

    Read-only commands (stats, jobs, dead ls, archive) read the storage named by
    --data (or OSQUEUE_DATA) and write nothing. Changes (cancel, dead redrive, dead
    purge) go to the broker that owns the queue: --broker HOST:PORT (or OSQUEUE_BROKER),
    or the owner found through --data. Every command takes --json for machine output.

    \b
    Exit codes: 0 done; 1 storage or broker failure (retry later); 2 usage error;
    3 not found (no such job, not a dead letter, no state object); 4 unreadable
    (corrupt or missing data, or written by a newer osqueue).

    \b
    Examples:
      osqueue stats --data s3://bucket/queue
      osqueue jobs ls --queue emails --status dead --json
      osqueue dead redrive --queue emails --broker 127.0.0.1:9090
      osqueue archive cat --since 1h > finished.jsonl
      osqueue server --listen :9090 --data s3://bucket/queue
      osqueue worker tasks:handle --broker 127.0.0.1:9090
    """


@cli.group(context_settings=_CONTEXT)
def jobs() -> None:
    """The jobs in the state: list them, or show one."""


@cli.group(context_settings=_CONTEXT)
def dead() -> None:
    """Dead letters: list them (from storage), redrive or purge them (through the
    broker)."""


@cli.group(context_settings=_CONTEXT)
def archive() -> None:
    """The archive of finished jobs: its hourly buckets, and its records as JSON lines."""


cli.add_command(stats)
cli.add_command(cancel)
jobs.add_command(jobs_ls)
jobs.add_command(jobs_show)
dead.add_command(dead_ls)
dead.add_command(dead_redrive)
dead.add_command(dead_purge)
archive.add_command(archive_ls)
archive.add_command(archive_cat)

_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


@cli.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def server(args: tuple[str, ...]) -> int:
    """Run the broker: `osqueue server --help` lists its flags (those of python -m
    osqueue_io.server)."""
    from osqueue_io.server.cli import main as server_main

    return server_main(list(args), prog="osqueue server")


@cli.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> int:
    """Run a worker: `osqueue worker --help` lists its flags (those of python -m
    osqueue_io.worker)."""
    from osqueue_io.runner.cli import main as worker_main

    return worker_main(list(args), prog="osqueue worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: the process's arguments); returns the
    exit code, having printed any error as one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="osqueue", standalone_mode=False)
    except click.UsageError as error:  # BadParameter, missing options, unknown commands
        hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
        return _fail(_command_of(error.ctx), error.format_message() + hint, EXIT_USAGE)
    except click.ClickException as error:
        return _fail("osqueue", error.format_message(), error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        return _fail("osqueue", "interrupted", 130)
    except CliError as error:
        return _fail(error.command or "osqueue", str(error), error.code)
    except OsqueueError as error:
        return _fail("osqueue", str(error), exit_code_of(error))
    except SystemExit as done:  # argparse in `server` and `worker` (--help, bad flags)
        return done.code if isinstance(done.code, int) else EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK  # the reader stopped reading (`| head`): nothing more to say
    except Exception as error:
        if os.environ.get("OSQUEUE_TRACEBACK"):
            raise
        return _fail(
            "osqueue",
            f"unexpected {type(error).__name__}: {error} (a bug: please report it; "
            "OSQUEUE_TRACEBACK=1 shows where)",
            EXIT_FAILED,
        )
    return result if isinstance(result, int) else EXIT_OK


def _command_of(ctx: click.Context | None) -> str:
    return ctx.command_path if ctx is not None else "osqueue"


def _fail(command: str, message: str, code: int) -> int:
    line = " ".join(message.split())
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 1] + "…"
    sys.stderr.write(f"{command}: error: {line}\n")
    sys.stderr.flush()
    return code


def run() -> None:
    """The ``osqueue`` console script: :func:`main`, then exit with its code."""
    # Late import: exit_process lives with the broker's command line, which this
    # command must not load before it is asked to run a broker.
    from osqueue_io.server.cli import exit_process

    exit_process(main())
