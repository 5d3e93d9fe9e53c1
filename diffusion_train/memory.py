"""Activation checkpointing for the GenFusion UNet during training.

diffusers' ``UNet3DConditionModel`` (the UNet's base class) declares no gradient-checkpointing support and its 3-D
blocks ignore the flag, while the authors train with checkpointing on (``use_checkpoint: True``; the full model at
16 x 512 x 960 does not fit otherwise). This wraps each down/mid/up block's forward in non-reentrant
``torch.utils.checkpoint``: activations inside a block are recomputed in the backward pass. Weights, state dicts and
``save_pretrained`` are unaffected, and nothing changes outside training with gradients.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed(block: nn.Module):
    forward = block.forward

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if block.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


def enable_block_checkpointing(unet: nn.Module) -> int:
    """Checkpoint every down, mid and up block of ``unet``; returns the number of wrapped blocks."""
    blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    for block in blocks:
        if not getattr(block, "_genfusion_checkpointed", False):
            block.forward = _checkpointed(block)
            block._genfusion_checkpointed = True
    return len(blocks)
