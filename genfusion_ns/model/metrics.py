"""Evaluation metrics that must not download anything, and the PSNR the benchmark scripts share.

torchmetrics' LPIPS ships only the small linear heads; the AlexNet backbone comes from torchvision's model zoo, which
downloads it on first use. Offline that raises deep inside evaluation, so we check the torch hub cache first and,
when the weights are absent, warn once and report no LPIPS at all -- never a placeholder value.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import torch

_WARNED = False


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of two images with values in [0, 1] (arrays or tensors), computed in float64."""
    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64) for x in (a, b))
    return float(10.0 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def alexnet_weights_path() -> str:
    """Where torchvision caches the AlexNet weights LPIPS needs (``$TORCH_HOME/hub/checkpoints/...``)."""
    from torchvision.models import AlexNet_Weights

    filename = os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def load_lpips_if_available(device: torch.device) -> torch.nn.Module | None:
    """LPIPS (AlexNet, inputs in [0, 1]) on ``device``, or None with a one-time warning if it cannot load offline."""
    global _WARNED
    path = alexnet_weights_path()
    if not os.path.isfile(path):
        reason = f"the AlexNet weights are not in the torch hub cache ({path})"
    else:
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device).eval()
        except (OSError, RuntimeError, ImportError, ValueError, pickle.UnpicklingError) as error:  # bad cache file
            reason = f"building it failed ({type(error).__name__}: {error})"
    if not _WARNED:
        warnings.warn(f"LPIPS is left out of the metrics: {reason}. Put the file there to enable it.", stacklevel=2)
        _WARNED = True
    return None
