"""Errors that are the user's to fix: commands print their message, not a traceback."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Callable, NoReturn


class UserError(Exception):
    """Bad input (a dataset, a model folder, a flag) that the user can fix; the message says what was wrong and what
    to do."""


class UserExit(SystemExit):
    """Ends a command after its message was printed (``code`` 2: bad input; 130: interrupted). In-process callers
    (the demo, the bench) catch it and read ``message``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(code)
        self.message = message


def print_error(command: str | None, message: object) -> None:
    """``<command>: error: <message>`` in red on stderr: how every GenFusion command reports a user's mistake."""
    from rich.console import Console
    from rich.markup import escape

    prefix = f"{command}: error:" if command else "error:"
    Console(stderr=True).print(f"[bold red]{prefix}[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def exit_with_error(command: str, message: object) -> NoReturn:
    """:func:`print_error`, then exit with status 2 like argparse's usage errors (no traceback for a mistake the
    user can fix)."""
    print_error(command, message)
    raise SystemExit(2)


_previous_excepthook: Callable[..., Any] | None = None


def _print_user_errors(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    message = None
    if issubclass(kind, UserError):
        message = str(error)
    elif issubclass(kind, NotADirectoryError) and getattr(error, "filename", None):
        # e.g. ns-export --output-dir naming an existing file: nerfstudio fails only when it writes into it
        message = (f"cannot write {error.filename}: part of that path is a file, not a folder "  # type: ignore[attr-defined]
                   "(is --output-dir an existing file?). Choose a folder, or a path that does not exist yet.")
    if message is not None:
        print_error(None, message)
        return
    (_previous_excepthook or sys.__excepthook__)(kind, error, trace)


def install_user_error_hook() -> None:
    """An uncaught :class:`UserError` (or a write into a path whose folder is a file) ends the process (status 1)
    with a message instead of a traceback.

    ``ns-train`` turns them into messages in GenFusion's trainer; this covers nerfstudio's other commands
    (``ns-eval``, ``ns-viewer``, ``ns-export``, ``ns-render``), whose set-up runs our dataparser and pipeline but
    lets exceptions escape. In-process callers still get the exception.
    """
    global _previous_excepthook
    if sys.excepthook is not _print_user_errors:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _print_user_errors
