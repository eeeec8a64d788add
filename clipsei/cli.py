"""Command line: ``clipsei <command> ...``. The only module that prints.

Each command is a pair of functions: ``_add_<name>_arguments(parser)`` and
``_run_<name>(args) -> int``, registered in ``_COMMANDS``. Errors a user can fix
(a bad path, an empty folder, a malformed manifest) are reported as one line on
stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__

# name -> (help, add_arguments, run); filled in below each command's functions.
_COMMANDS: dict = {}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsei", description="Find mislabeled images with CLIP embeddings and SEI."
    )
    parser.add_argument("--version", action="version", version=f"clipsei {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in _COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    run = _COMMANDS[args.command][2]
    try:
        return int(run(args) or 0)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as err:
        print(f"clipsei {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipsei {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


# --- commands ------------------------------------------------------------------------------
# Each helper adds its command's two functions and one _COMMANDS entry in its own block.


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
