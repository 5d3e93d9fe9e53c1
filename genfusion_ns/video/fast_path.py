"""The video pipeline's speed switches: autocast, an opt-in ``torch.compile`` of the UNet, and the SDPA audit.

A mixin of :class:`~genfusion_ns.video.pipeline.GenFusionVideoPipeline`. Both switches are off by default, so the
float32 outputs stay those of the authors' code. The other parts of the fast path live where they act: both CFG
branches as one UNet batch and a sampling loop without host-device synchronisation (:mod:`.denoising`,
:mod:`.scheduling`), VAE passes in frame chunks (:mod:`.encoding`), SDPA in every attention layer (the models'
defaults; :func:`non_sdpa_attention` checks them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from diffusers.utils import logging
from torch import nn
from transformers import PreTrainedModel

from .models.attention import SplitContextCrossAttnProcessor

logger = logging.get_logger(__name__)

AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)
SDPA_PROCESSORS = (AttnProcessor2_0, FusedAttnProcessor2_0, SplitContextCrossAttnProcessor)
"""diffusers attention processors that call ``torch.nn.functional.scaled_dot_product_attention``."""


def non_sdpa_attention(module: nn.Module) -> list[str]:
    """``"name: implementation"`` of every attention layer under ``module`` that does not use SDPA (empty: all
    do). Covers diffusers ``Attention`` processors and transformers models (``attn_implementation``)."""
    found = []
    for name, sub in module.named_modules():
        if isinstance(sub, Attention) and not isinstance(sub.processor, SDPA_PROCESSORS):
            found.append(f"{name}: {type(sub.processor).__name__}")
        elif isinstance(sub, PreTrainedModel) and sub.config._attn_implementation != "sdpa":
            found.append(
                f"{name or type(sub).__name__}: attn_implementation={sub.config._attn_implementation}"
            )
    return found


@contextlib.contextmanager
def around_sampling_loops(
    pipe: Any, context: Callable[[], contextlib.AbstractContextManager]
) -> Iterator[list[int]]:
    """Enter ``context()`` around every DDIM loop ``pipe`` runs inside this block, and around nothing else.

    For checks of the loop alone, e.g. :func:`cuda_syncs_raise` (the pipeline's preparation and output legitimately
    synchronise). The loop is exactly the block of the pipeline's progress bar. Yields a list that grows by one
    per loop, so a check can tell that it really ran.
    """
    loops: list[int] = []
    original = pipe.progress_bar

    @contextlib.contextmanager
    def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with original(*args, **kwargs) as bar, context():
            loops.append(len(loops))
            yield bar

    pipe.progress_bar = guarded
    try:
        yield loops
    finally:
        del pipe.progress_bar


@contextlib.contextmanager
def cuda_syncs_raise() -> Iterator[None]:
    """Every host-device synchronisation raises inside the block (``torch.cuda.set_sync_debug_mode("error")``)."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


class FastPathMixin:
    """Autocast and ``torch.compile`` switches of the pipeline (diffusers-style ``enable_*`` methods)."""

    _autocast_dtype: torch.dtype | None = None
    _torch_compile_options: dict[str, Any] | None = None

    # ------------------------------------------------------------------ autocast

    def enable_autocast(self, dtype: torch.dtype = torch.float16) -> None:
        """Run CLIP, the resampler, the UNet and the VAE under ``torch.autocast(dtype)`` on the execution device.

        For float32 weights: matmuls and convolutions run in ``dtype`` while autocast keeps softmax and norms in
        float32. The scheduler arithmetic stays float32 outside autocast, and every output is float32. Casting
        the weights instead (``pipe.to(dtype=torch.float16)``) is the faster choice when memory matters; the
        two combine. CPU autocast supports bfloat16.
        """
        if dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast dtype must be one of {AUTOCAST_DTYPES}, got {dtype}")
        self._autocast_dtype = dtype

    def disable_autocast(self) -> None:
        self._autocast_dtype = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the networks autocast to (``None``: off, the default)."""
        return self._autocast_dtype

    def network_autocast(self) -> contextlib.AbstractContextManager:
        """The context every network call runs in: autocast when enabled, else nothing at all (so float32
        stays bit-identical)."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._execution_device.type, dtype=self._autocast_dtype)

    # ------------------------------------------------------------------ torch.compile

    def enable_torch_compile(
        self, mode: str | None = None, fullgraph: bool = False, dynamic: bool | None = False
    ) -> None:
        """Compile the UNet's forward with ``torch.compile`` (``nn.Module.compile``: weights, saving and
        offloading are untouched). Off by default: the first call then compiles for minutes, worth it only for
        many clips. The shapes of a repair are fixed, hence ``dynamic=False``. One-way for this pipeline
        object: load it again to run uncompiled."""
        if os.environ.get("TORCHDYNAMO_DISABLE") == "1":  # torch reads it once, at import
            logger.warning("TORCHDYNAMO_DISABLE is set: torch.compile leaves the UNet uncompiled")
        options = {"mode": mode, "fullgraph": fullgraph, "dynamic": dynamic}
        self.unet.compile(**options)
        self._torch_compile_options = options

    @property
    def torch_compile_options(self) -> dict[str, Any] | None:
        """The options the UNet was compiled with (``None``: not compiled, the default)."""
        return self._torch_compile_options
