"""Make an ``ffmpeg`` program findable for nerfstudio on a PyPI-only install.

``ns-render`` checks ``shutil.which("ffmpeg")`` (``nerfstudio.utils.install_checks.check_ffmpeg_installed``)
before it writes a video, ``mediapy`` looks ``ffmpeg`` up on ``PATH`` the same way, and some render modes run
``ffmpeg`` in a shell. A fresh ``pip install`` has no such program, so ``ns-render
interpolate|spiral|camera-path`` stopped with "Could not find ffmpeg". The ``imageio-ffmpeg`` wheel (a
dependency) ships a static ffmpeg binary under a versioned name (``ffmpeg-linux-x86_64-v9.0.2``);
:func:`ensure_ffmpeg` links it as ``ffmpeg`` into a small cache folder and puts that folder on this process's
``PATH`` (inherited by its children). An ffmpeg already on ``PATH`` always wins.

nerfstudio imports ``genfusion_ns.method_configs`` for every ``ns-*`` command, which calls
:func:`ensure_ffmpeg`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

PROGRAM = "ffmpeg.exe" if os.name == "nt" else "ffmpeg"
CACHE_ENV = "GENFUSION_CACHE"
"""Overrides the folder of the ``ffmpeg`` link (default: the user cache)."""


def _link_folders() -> list[Path]:
    """Where the link may go, best first: the user's cache, then the temporary folder (per user)."""
    folders = []
    if os.environ.get(CACHE_ENV):
        folders.append(Path(os.environ[CACHE_ENV]).expanduser())
    try:
        folders.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genfusion")
    except RuntimeError:  # no home folder
        pass
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return folders + [Path(tempfile.gettempdir()) / f"genfusion-{user}"]


def _bundled_ffmpeg() -> str | None:
    """Path of imageio-ffmpeg's binary; None without the package or a binary for this platform."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # no binary shipped for this platform and none on the system
        return None


def _linked(executable: str, folder: Path) -> Path:
    """``folder/ffmpeg`` pointing at ``executable`` (a symlink; a copy where links are not allowed)."""
    link = folder / PROGRAM
    if link.exists() and link.resolve() == Path(executable).resolve():
        return link
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{PROGRAM}.{os.getpid()}"  # made aside, then renamed: safe for concurrent commands
    partial.unlink(missing_ok=True)
    try:
        partial.symlink_to(executable)
    except OSError:
        shutil.copy2(executable, partial)
    os.replace(partial, link)
    return link


def ensure_ffmpeg() -> str | None:
    """Path of the ``ffmpeg`` that ``shutil.which("ffmpeg")`` now finds, or None when there is none to offer.

    Uses the ``ffmpeg`` already on ``PATH`` if any; otherwise puts imageio-ffmpeg's binary on ``PATH`` as
    ``ffmpeg``. Never raises: without a writable cache folder (tried: the cache, then the temporary folder) it
    returns None and nerfstudio reports the missing ffmpeg as before.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    executable = _bundled_ffmpeg()
    if executable is None:
        return None
    tag = hashlib.sha1(str(Path(executable).resolve()).encode()).hexdigest()[:12]  # one folder per binary
    for root in _link_folders():
        try:
            link = _linked(executable, root / "ffmpeg" / tag)
        except OSError:
            continue
        os.environ["PATH"] = str(link.parent) + os.pathsep + os.environ.get("PATH", "")
        return shutil.which("ffmpeg")
    return None
