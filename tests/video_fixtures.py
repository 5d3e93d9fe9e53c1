"""Locate and load the official-code golden fixture shared by the video tests.

The fixture (weights + reference tensors produced by the authors' code on a tiny random model, 28 MB) ships in
``tests/fixtures``; a set in ``../shared/fixtures`` next to the checkout takes precedence. ``GENFUSION_FIXTURES`` points
to another fixtures root (the folder that *contains* ``genfusion_official_tiny``) or directly to a fixture set.
Tests that need it call :func:`fixture_dir` / :func:`load_cases`, which skip cleanly when it is absent.

Import from a test module as ``from video_fixtures import fixture_dir, load_cases`` (pytest puts ``tests/`` on
``sys.path`` because the folder has no ``__init__.py``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_SET = "genfusion_official_tiny"
MANIFEST_NAME = "genfusion_official_manifest.json"
ENV_VAR = "GENFUSION_FIXTURES"


SHIPPED_ROOT = REPO_ROOT / "tests" / "fixtures"
"""A copy of the shared set shipped with the tests, so a fresh clone runs every fixture test."""


def fixtures_root() -> Path:
    """The folder holding the fixture sets and the full-size manifest: ``GENFUSION_FIXTURES`` first, then
    ``../shared/fixtures`` next to the checkout (where CI may put another set), then the copy in tests/fixtures."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser().resolve()
        # Accept either the fixtures root or a fixture set folder itself.
        return path.parent if (path / "cases.json").is_file() else path
    shared = (REPO_ROOT.parent / "shared" / "fixtures").resolve()
    return shared if (shared / FIXTURE_SET / "cases.json").is_file() else SHIPPED_ROOT


def _set_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    if override and (Path(override).expanduser() / "cases.json").is_file():
        return Path(override).expanduser().resolve()
    return fixtures_root() / FIXTURE_SET


def fixture_dir() -> Path:
    """Directory of the official-code fixture set; skips the calling test when it is missing."""
    path = _set_dir()
    required = ("checkpoint.ckpt", "cases.safetensors", "cases.json", "config.json")
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        pytest.skip(f"authors'-implementation fixture set {FIXTURE_SET} not found: {path} lacks "
                    f"{', '.join(missing)}. {_where_fixtures_go()}")
    return path


def _where_fixtures_go() -> str:
    """How to provide the fixtures, for the skip messages (the same text the README's test section gives)."""
    default = (REPO_ROOT.parent / "shared" / "fixtures").resolve()
    told = os.environ.get(ENV_VAR)
    now = f"{ENV_VAR}={told} was used" if told else f"{ENV_VAR} is not set"
    return (f"The fixtures ship in {SHIPPED_ROOT} (restore it with git checkout tests/fixtures); a fixtures "
            f"folder (holding {FIXTURE_SET}/ and {MANIFEST_NAME}) at {default} (../shared/fixtures next to the "
            f"checkout) takes precedence, or point the tests at one: {ENV_VAR}=/path/to/fixtures python -m pytest "
            f"({now}).")


def manifest_path() -> Path:
    """Path of the full-size checkpoint manifest (every key and shape); skips when missing."""
    path = fixtures_root() / MANIFEST_NAME
    if not path.is_file():
        pytest.skip(f"full-size checkpoint manifest not found at {path}. {_where_fixtures_go()}")
    return path


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    root = Path(path)
    tensors = load_file(str(root / "cases.safetensors"))
    cases = json.loads((root / "cases.json").read_text())
    return tensors, cases


def load_cases() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, cases)``: every case tensor from cases.safetensors and the parsed cases.json.

    The returned objects are cached and shared between tests: clone tensors before modifying them in place.
    """
    return _load(str(fixture_dir()))


def load_config() -> dict[str, Any]:
    """The fixture's config.json (model hyper-parameters in the authors' and the diffusers world)."""
    return json.loads((fixture_dir() / "config.json").read_text())


def checkpoint_path() -> Path:
    """The fixture's authors'-format Lightning checkpoint."""
    return fixture_dir() / "checkpoint.ckpt"


def tolerance(cases: dict[str, Any], case: str, name: str) -> float:
    """Recommended absolute tolerance of one output of one case (e.g. ``("a_unet", "out_v")``)."""
    return float(cases[case]["recommended_tolerance"][name]["atol"])
