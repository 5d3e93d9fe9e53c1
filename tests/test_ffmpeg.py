"""ffmpeg from PyPI alone: imageio-ffmpeg's binary on PATH as ``ffmpeg``, so ``ns-render`` writes videos.

The subprocess tests run with a PATH that holds only the virtual environment's scripts (no system ffmpeg), as
on a fresh install; they need ``genfusion_ns.method_configs`` (imported by every ``ns-*`` command) to call
:func:`genfusion_ns.ffmpeg.ensure_ffmpeg`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from genfusion_ns import ffmpeg

VENV_BIN = Path(sys.executable).parent


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a fresh install: the venv's scripts on PATH and nothing else, a fresh cache folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("GENFUSION_CACHE", "XDG_CACHE_HOME")}
    env.update(PATH=str(VENV_BIN), GENFUSION_CACHE=str(tmp_path / "cache"), TORCHDYNAMO_DISABLE="1",
               OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def no_ffmpeg_on_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv(ffmpeg.CACHE_ENV, str(tmp_path / "cache"))
    assert shutil.which("ffmpeg") is None
    return tmp_path


def test_links_the_bundled_binary_when_path_has_no_ffmpeg(no_ffmpeg_on_path):
    found = ffmpeg.ensure_ffmpeg()
    assert found is not None and Path(found).parent.parent == no_ffmpeg_on_path / "cache" / "ffmpeg"
    assert shutil.which("ffmpeg") == found and Path(found).name == ffmpeg.PROGRAM
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("ffmpeg version")
    # nerfstudio 1.1.5 (ns-process-data) and mediapy's video reader pass -vsync; the ffmpeg 9 of
    # imageio-ffmpeg 0.8 refuses it (hence the pin in pyproject.toml).
    source = ["-f", "lavfi", "-i", "testsrc=d=0.2:s=32x32"]
    decode = ["ffmpeg", "-hide_banner", *source, "-vsync", "0", "-f", "null", "-"]
    subprocess.run(decode, capture_output=True, check=True, timeout=60)
    import mediapy

    assert mediapy._get_ffmpeg_path() == found  # what mediapy.write_video (ns-render's writer) runs
    path_before = os.environ["PATH"]
    assert ffmpeg.ensure_ffmpeg() == found and os.environ["PATH"] == path_before  # idempotent


def test_an_ffmpeg_already_on_path_wins(tmp_path, monkeypatch):
    own = tmp_path / "bin"
    own.mkdir()
    program = own / "ffmpeg"
    program.write_text("#!/bin/sh\necho mine\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(own))
    monkeypatch.setenv(ffmpeg.CACHE_ENV, str(tmp_path / "cache"))
    assert ffmpeg.ensure_ffmpeg() == str(program)
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_falls_back_to_the_temporary_folder(no_ffmpeg_on_path, monkeypatch):
    blocker = no_ffmpeg_on_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ffmpeg.CACHE_ENV, str(blocker))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(no_ffmpeg_on_path / "tmp"))
    found = ffmpeg.ensure_ffmpeg()
    assert found is not None and Path(found).is_relative_to(no_ffmpeg_on_path / "tmp")


def test_every_ns_command_finds_ffmpeg(tmp_path):
    """nerfstudio imports our method registrations for every ns-* command; that import must offer ffmpeg."""
    code = "import shutil, genfusion_ns.method_configs; print(shutil.which('ffmpeg'))"
    done = subprocess.run([sys.executable, "-c", code], env=_bare_env(tmp_path), capture_output=True,
                          text=True, check=True, timeout=300)
    out = done.stdout.strip().splitlines()[-1]
    assert out != "None" and Path(out).is_relative_to(tmp_path / "cache"), out


@pytest.mark.slow
def test_ns_render_writes_a_video_of_a_trained_run(tmp_path, monkeypatch):
    from genfusion_ns.scenes import generate_scene

    generate_scene(tmp_path / "scene", seed=21, views=6, train_views=3, resolution=24, points_per_view=40)
    env = _bare_env(tmp_path)
    train = [str(VENV_BIN / "ns-train"), "genfusion-2dgs-lite", "--data", "scene", "--max-num-iterations",
             "5", "--machine.device-type", "cpu", "--vis", "tensorboard", "--output-dir", "runs",
             "--timestamp", "t"]
    subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, check=True, timeout=600)
    config = Path("runs/scene/genfusion-2dgs-lite/t/config.yml")
    assert (tmp_path / config).is_file()
    render = [str(VENV_BIN / "ns-render"), "interpolate", "--load-config", str(config), "--output-path",
              "video.mp4", "--frame-rate", "4", "--interpolation-steps", "2"]
    done = subprocess.run(render, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert "Could not find ffmpeg" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    video = tmp_path / "video.mp4"
    assert video.is_file() and video.stat().st_size > 0
    import mediapy

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test
    ffmpeg.ensure_ffmpeg()
    frames = mediapy.read_video(str(video))  # decoded with the same bundled ffmpeg
    assert frames.shape[0] >= 2 and frames.shape[1:3] == (24, 24)
