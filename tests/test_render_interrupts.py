"""The render path survives the viewer's interrupts.

nerfstudio's viewer stops a render that a newer camera makes stale by raising from a ``sys.settrace`` hook at the
next line event of the render thread. Whatever line that is, the render path must leave nothing held: the next
render (the viewer's, or the training step's, which shares the kernels' launch lock) must run.
"""

from __future__ import annotations

import sys
import threading

import pytest
import torch
from test_rasterize_torch import random_scene

from genfusion_ns.rasterize import rasterize_surfels

pytest.importorskip("numba")


class _Interrupt(Exception):
    """Stands in for nerfstudio's ``IOChangeException``."""


def _interrupt_at(line_number: int):
    """A trace hook that raises at the ``line_number``-th line event, as nerfstudio's ``check_interrupt`` does."""
    seen = [0]

    def hook(frame, event, arg):
        if event == "line":
            seen[0] += 1
            if seen[0] == line_number:
                raise _Interrupt
        return hook

    return hook


def _render(scene, grad: bool = False) -> torch.Tensor:
    params = {k: scene[k].clone().requires_grad_(grad) for k in ("means", "quats", "scales", "opacities", "colors")}
    out = rasterize_surfels(**{**scene, **params}, backend="cpu")
    if grad:
        out.rgb.sum().backward()
    return out.rgb.detach()


def _in_thread(work, timeout: float = 120.0):
    """Run ``work()`` in its own thread, as nerfstudio's render thread and trainer do; returns its result, or raises
    what it raised. Thread-local state a traced render may leave behind (grad mode) stays in that thread."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as error:  # handed to the caller
            result["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the render did not finish: something the render path takes is still held"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _traced_render(scene, line_number: int):
    """One viewer-style render (no grad, like nerfstudio's) interrupted at its ``line_number``-th line event."""
    torch.set_grad_enabled(False)  # nerfstudio enters no_grad before it installs the trace hook
    sys.settrace(_interrupt_at(line_number))
    try:
        return _render(scene)
    except _Interrupt:
        return None
    finally:
        sys.settrace(None)


def test_a_render_interrupted_at_any_line_leaves_the_next_renders_free():
    from genfusion_ns.rasterize.cpu_kernels import _LAUNCH_LOCK

    scene = random_scene(n=12, width=10, height=8, cameras=1, seed=3, dtype=torch.float32)
    expected = _in_thread(lambda: _render(scene))  # compiles the kernels untraced
    line = 0
    while True:
        line += 1
        result = _in_thread(lambda: _traced_render(scene, line))
        assert not _LAUNCH_LOCK.locked(), f"an interrupt at line event {line} left the kernels' launch lock held"
        if result is not None:
            break
        assert line < 20000, "the render never completed under tracing"
    assert line > 100, f"the render path had only {line} line events: the hook did not trace it"
    torch.testing.assert_close(result, expected)
    _in_thread(lambda: _render(scene, grad=True), timeout=60)  # a training step after the interrupts
