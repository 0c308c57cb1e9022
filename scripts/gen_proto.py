"""Regenerate the betterproto2 code for osqueue's .proto files.

Usage (from anywhere; ``make proto`` runs it with no argument)::

    .venv/bin/python scripts/gen_proto.py            # rewrites osqueue_io/_proto
    .venv/bin/python scripts/gen_proto.py --out DIR  # writes a fresh tree into DIR

Compiles every ``.proto`` under ``proto/osqueue`` and ``proto/grpc`` (the standard
health service the broker serves) in one protoc call (the generated
modules import each other relative to the output root, so they must be generated
together) with grpclib async client stubs and async server bases. The output replaces
the target directory wholesale, so a module whose .proto was deleted disappears too.

``proto/compat`` is deliberately left out: it is the original broker's definition of
the same package, kept only for the compatibility tests.

Determinism: protoc runs with the repository root as its working directory, because
the betterproto2 compiler pipes its output through ``ruff check --fix`` and
``ruff format``, which read ``pyproject.toml`` from the working directory (line length,
import sorting). Run from anywhere else, the same .proto gives differently wrapped
code. The venv's ``bin`` is put first on PATH so protoc finds the
``protoc-gen-python_betterproto2`` plugin and the pinned ruff.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
#: Only these subtrees are compiled; proto/compat holds the original's definition.
PROTO_SOURCES = (PROTO_ROOT / "osqueue", PROTO_ROOT / "grpc")
DEFAULT_OUT = REPO_ROOT / "osqueue_io" / "_proto"
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"
#: A file betterproto2 always writes at the output root: marks a generated tree.
MARKER = "message_pool.py"


def proto_files() -> list[Path]:
    """Return the .proto files to compile, sorted so the protoc call is reproducible."""
    files = sorted(path for source in PROTO_SOURCES for path in source.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {', '.join(map(str, PROTO_SOURCES))}")
    return files


def generate(out_dir: Path) -> None:
    """Compile every osqueue .proto into ``out_dir``, replacing what was there."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        # The whole directory is replaced: never do that to one we did not generate.
        raise SystemExit(f"{out_dir} is not empty and has no {MARKER}: refusing to replace it")
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(venv_bin), env.get("PATH", "")])
    # Generate beside the target (same filesystem), then swap it in, so a failed run
    # never leaves a half-written tree behind.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".gen_proto-") as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT.relative_to(REPO_ROOT)}",
            f"--python_betterproto2_out={staging}",
            f"--python_betterproto2_opt={PLUGIN_OPTIONS}",
            *(str(path.relative_to(REPO_ROOT)) for path in proto_files()),
        ]
        # The plugin reports each file it writes on stderr; show it only on failure.
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise SystemExit(f"protoc failed with exit code {result.returncode}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(staging, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output package directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    generate(args.out)
    print(f"generated {args.out}")


if __name__ == "__main__":
    main()
