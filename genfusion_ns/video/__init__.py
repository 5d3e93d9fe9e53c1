"""GenFusion's RGB-D video diffusion runtime on diffusers.

``GenFusionVideoPipeline`` (``pipeline``) repairs rendered RGB-D clips given a reference image; its scheduler
is ``GenFusionDDIMScheduler`` (``scheduling``); pixel conventions live in ``preprocess``; the networks in
``models``; ``VideoRepairModel`` (``interface``) is the contract the fusion rounds use. Names are resolved
lazily so that ``import genfusion_ns.video`` does not import diffusers until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenFusionVideoPipeline": "pipeline",
    "GenFusionVideoPipelineOutput": "pipeline",
    "GenFusionDDIMScheduler": "scheduling",
    "VideoRepairModel": "interface",
    "VideoRepairOutput": "interface",
}

__all__ = [
    "GenFusionDDIMScheduler",
    "GenFusionVideoPipeline",
    "GenFusionVideoPipelineOutput",
    "VideoRepairModel",
    "VideoRepairOutput",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
