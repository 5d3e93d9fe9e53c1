"""Errors that are the user's to fix: commands print their message, not a traceback."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Callable


class UserError(Exception):
    """Bad input (a dataset, a model folder, a flag) that the user can fix; the message says what was wrong and what
    to do."""


class UserExit(SystemExit):
    """Ends a command after its message was printed (``code`` 2: bad input; 130: interrupted). In-process callers
    (the demo, the bench) catch it and read ``message``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(code)
        self.message = message


_previous_excepthook: Callable[..., Any] | None = None


def _print_user_errors(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, UserError):
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(error))}", soft_wrap=True)
        return
    (_previous_excepthook or sys.__excepthook__)(kind, error, trace)


def install_user_error_hook() -> None:
    """An uncaught :class:`UserError` ends the process (status 1) with its message instead of a traceback.

    ``ns-train`` turns them into messages in GenFusion's trainer; this covers nerfstudio's other commands
    (``ns-eval``, ``ns-viewer``, ``ns-export``, ``ns-render``), whose set-up runs our dataparser and pipeline but
    lets exceptions escape. In-process callers still get the exception.
    """
    global _previous_excepthook
    if sys.excepthook is not _print_user_errors:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _print_user_errors
