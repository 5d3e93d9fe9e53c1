"""Shared fixtures: small procedural scenes generated once per test session."""

from __future__ import annotations

import os

import pytest

# nerfstudio's get_viewmat is torch.compile'd; compiling costs minutes on 2 cores and is not what the tests check.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module: on small shared machines two threads oversubscribe the cores (~10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolate_nerfstudio_writers():
    """Each test starts and ends without nerfstudio's global event writers (see genfusion_ns.nerfstudio_compat)."""
    yield
    from genfusion_ns.nerfstudio_compat import close_event_writers

    close_event_writers()


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A 12-view 32×32 room with 3 training views (nerfstudio dataset folder)."""
    from genfusion_ns.scenes import generate_scene

    out = tmp_path_factory.mktemp("scenes") / "tiny_room"
    generate_scene(out, seed=7, views=12, train_views=3, resolution=32)
    return out


@pytest.fixture(scope="session")
def tiny_dense_scene(tmp_path_factory):
    """A 16-view 32×32 room trained on all views but the held-out 0 and 8."""
    from genfusion_ns.scenes import generate_scene

    out = tmp_path_factory.mktemp("scenes") / "tiny_dense_room"
    generate_scene(out, seed=8, views=16, train_views="all", resolution=32)
    return out
