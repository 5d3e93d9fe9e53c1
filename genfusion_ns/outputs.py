"""Output folders of the GenFusion commands: nothing a command did not create is ever deleted or overwritten.

One policy for every command that writes a folder (``genfusion-scene``, ``-sparse-split``, ``-mask-dataset``,
``-convert``, ``-demo``, ``-bench``, ``-make-data``, ``-train-video``, ``-train-vae``):

* the folder must not be one of the command's inputs nor lie inside one (writing there would modify the input), and
  under ``--overwrite`` it must not hold one either (replacing it would delete the input);
* an absent or empty folder is always fine; a non-empty one is replaced (``--overwrite``) only if its marker file
  :data:`MARKER` says this very command made it -- anything else is the user's to delete;
* resumable commands (make-data, bench) continue in a folder they made, never in somebody else's;
* dataset-producing commands write into a sibling ``<name>.partial`` folder and rename it into place when done
  (:func:`staged_output_folder`), so a half-written folder never looks finished.

:func:`exit_with_error` is the commands' one way to report such (and any other expected) errors.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from genfusion_ns.errors import exit_with_error  # noqa: F401  (re-exported: the commands import it from here)

MARKER = ".genfusion-output.json"
"""File naming the command that made a folder (JSON ``{"command": ..., "created": ...}``)."""
PARTIAL_SUFFIX = ".partial"
"""Sibling folder a staged output is written into before it is renamed into place."""

PathLike = str | os.PathLike[str]
Inputs = Mapping[str, PathLike | Iterable[PathLike] | None]
"""Input paths of a command by the name the messages give them (``{"--data": paths, "the source": path}``)."""


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message says what was wrong and what to do."""


def replace_atomically(path: PathLike, write: Callable[[Path], None]) -> Path:
    """``write(temporary)`` then rename it over ``path``: readers see the old file or the complete new one, never a
    half-written one (a crash leaves only ``<name>.<pid>.tmp``)."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        if path.is_symlink():  # never write through a link into another folder
            path.unlink()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- the marker


def read_marker(folder: PathLike) -> dict | None:
    """The marker of ``folder`` (None: no readable marker, i.e. not a folder a GenFusion command made)."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():  # a linked marker belongs to some other folder
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and isinstance(content.get("command"), str) else None


def made_by(folder: PathLike) -> str | None:
    """The command named by ``folder``'s marker, or None."""
    marker = read_marker(folder)
    return None if marker is None else marker["command"]


def write_marker(folder: PathLike, command: str) -> None:
    """Mark ``folder`` as made by ``command`` (atomically, and never through a link into another folder)."""
    record = json.dumps({"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
    replace_atomically(Path(folder) / MARKER, lambda temporary: temporary.write_text(record))


def _holds_outputs(folder: Path) -> bool:
    """True if ``folder`` has entries besides a marker (a folder holding only a marker has nothing to lose)."""
    return any(entry.name != MARKER for entry in folder.iterdir())


# ---------------------------------------------------------------------------------------------- the policy


def _input_paths(inputs: Inputs | None) -> Iterator[tuple[str, Path]]:
    for label, value in (inputs or {}).items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for path in values:
            if path is not None and Path(path).expanduser().exists():  # only what exists can be lost
                yield label, Path(path).expanduser()


def check_output_folder(
    folder: PathLike,
    overwrite: bool,
    command: str,
    inputs: Inputs | None = None,
    *,
    flag: str = "--output",
    error: type[Exception] = OutputFolderError,
    resumable: bool = False,
    legacy: Callable[[Path], bool] | None = None,
    resume_flag: str | None = None,
) -> Path:
    """Check ``folder`` against the policy (module docstring) without touching anything; returns it resolved.

    ``inputs``: the command's input paths by name; ``error``: the exception the command reports errors with;
    ``resumable``: the command continues in a folder it made (no ``--overwrite``); ``legacy``: recognises such a
    folder written before markers existed; ``resume_flag``: the command's flag to continue a run (for the message).
    """
    shown = Path(folder)
    target = shown.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise error(f"{flag} {shown} exists and is not a folder; choose another path.")
    for label, path in _input_paths(inputs):
        source = path.resolve()
        if source == target:
            consequence = "--overwrite would delete it" if overwrite else "writing there would modify it"
            raise error(f"{flag} {shown} is {label} {path} itself: {consequence}. Choose another {flag}.")
        if source in target.parents:
            raise error(f"{flag} {shown} is inside {label} {path}: writing there would modify it. Choose a "
                        f"{flag} outside it.")
        if target in source.parents and overwrite:
            raise error(f"{flag} {shown} holds {label} {path}: --overwrite would delete it. Choose another {flag} "
                        "(or move the input out of it first).")
    if not target.is_dir() or not _holds_outputs(target):
        return target
    owner = made_by(target)
    if resumable:
        if owner == command or (owner is None and legacy is not None and legacy(target)):
            return target
        made = f"was written by {owner}" if owner else f"was not written by {command}"
        raise error(f"{flag} {shown} is not empty and {made}; choose an empty or new folder ({command} continues "
                    "only in a folder it made itself).")
    if owner != command:
        made = f"was written by {owner}, not by {command}" if owner else (
            f"was not written by {command} (it has no {MARKER} marker)")
        if overwrite:
            raise error(f"{flag} {shown} {made}, so --overwrite will not delete it. Delete it yourself if you no "
                        f"longer need it, or choose another {flag}.")
        raise error(f"{flag} {shown} is not empty and {made}; choose an empty or new folder (--overwrite replaces "
                    f"only a folder that {command} wrote itself).")
    if not overwrite:
        resume = f"pass {resume_flag} to continue it, " if resume_flag else "pass "
        raise error(f"{flag} {shown} is not empty: it holds an earlier {command} output; {resume}--overwrite to "
                    f"replace it, or choose another {flag}.")
    return target


def prepare_output_folder(
    folder: PathLike,
    overwrite: bool,
    command: str,
    inputs: Inputs | None = None,
    *,
    flag: str = "--output",
    error: type[Exception] = OutputFolderError,
    resumable: bool = False,
    legacy: Callable[[Path], bool] | None = None,
    resume_flag: str | None = None,
) -> Path:
    """Check ``folder`` (:func:`check_output_folder`), clear it if ``overwrite`` replaces an earlier output of
    ``command``, create it and mark it; for commands that write in place (training runs, the demo, make-data)."""
    target = check_output_folder(folder, overwrite, command, inputs, flag=flag, error=error, resumable=resumable,
                                 legacy=legacy, resume_flag=resume_flag)
    if overwrite and not resumable and target.is_dir() and _holds_outputs(target):
        shutil.rmtree(target)  # the policy has just confirmed it is this command's own earlier output
    target.mkdir(parents=True, exist_ok=True)
    if made_by(target) != command:
        write_marker(target, command)
    return target


def partial_folder(folder: PathLike) -> Path:
    """Where :func:`staged_output_folder` writes ``folder`` before renaming it into place."""
    target = Path(folder).expanduser().resolve()
    return target.with_name(target.name + PARTIAL_SUFFIX)


@contextmanager
def staged_output_folder(
    folder: PathLike,
    overwrite: bool,
    command: str,
    inputs: Inputs | None = None,
    *,
    flag: str = "--output",
    error: type[Exception] = OutputFolderError,
) -> Iterator[Path]:
    """Write-then-rename: yields a fresh marked sibling folder ``<name>.partial`` to write the output into; when the
    block succeeds, it replaces ``folder`` (absent, empty, or this command's earlier output: see
    :func:`check_output_folder`). An exception removes the partial folder; a crash leaves it, recognisably named,
    and the next run of the command removes it. The old output is renamed away before the new one moves in, so
    at every moment one complete version exists."""
    target = check_output_folder(folder, overwrite, command, inputs, flag=flag, error=error)
    partial = partial_folder(target)
    if partial.is_symlink() or partial.exists():
        if not partial.is_dir() or made_by(partial) != command:
            raise error(f"{partial} exists and was not written by {command}; {command} writes {flag} {folder} "
                        "there first. Move it away, or choose another folder.")
        shutil.rmtree(partial)  # this command's own leftover from an interrupted run
    try:
        partial.mkdir(parents=True)
    except OSError as failure:
        raise error(f"{flag} {folder} cannot be written ({failure.strerror}: {partial}); choose another "
                    "path.") from failure
    write_marker(partial, command)
    with replaced_on_success(partial, target):
        yield partial


@contextmanager
def replaced_on_success(partial: PathLike, target: PathLike) -> Iterator[Path]:
    """The rename half of write-then-rename: when the block succeeds, the folder ``partial`` (already made) replaces
    ``target``; when it raises, ``partial`` is removed. Used by the commands' outputs and by repair rounds."""
    partial, target = Path(partial), Path(target)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _move_into_place(partial, target)


def _move_into_place(partial: Path, target: Path) -> None:
    if not target.exists():
        os.rename(partial, target)
        return
    old = target.with_name(f"{target.name}.replaced-{os.getpid()}")
    os.rename(target, old)
    os.rename(partial, target)
    shutil.rmtree(old)
