"""The `forksim` command. Each subcommand lives in forksim/commands/<name>.py and exposes
`register(subparsers)`; this module only parses, dispatches and turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from .errors import ForksimError

__all__ = ["main", "build_parser"]

COMMANDS = ("run", "sweep", "predict", "plan", "calibrate", "validate", "report", "profiles", "bench")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 2 with one line naming the problem (no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="forksim",
        description="A discrete-event model of Linux process creation, calibrated on real machines.",
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    try:
        from importlib.metadata import version

        parser.add_argument("--version", action="version", version=f"forksim {version('forksim')}")
    except Exception:  # pragma: no cover - not installed
        pass
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # a command not built yet
            raise
        module.register(sub)
    for subparser in sub.choices.values():  # `forksim run ... --debug` works too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show a traceback on errors")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """forksim's own warnings (a profile measured on another host) as one line on stderr."""
    from .store import OffHostProfileWarning

    if issubclass(category, OffHostProfileWarning):
        print(f"forksim: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():  # restored on return (main is also called in-process)
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ForksimError as exc:
        if args.debug:
            traceback.print_exc()
        from .commands._common import flag_error  # the argument an error names, as its flag

        print(f"forksim: error: {flag_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run and sweep say themselves what they kept
        print("forksim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug of ours, not bad input: say so in one line, keep the trace for --debug
        if args.debug:
            raise
        print(f"forksim: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for a traceback, "
              "and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
