"""Resolve ``--pipeline.video-model`` to a video pipeline, lazily, outside the nerfstudio model's checkpoints.

Accepted values: ``none`` (fusion off), ``random-tiny`` (a seeded tiny random model: tests and debugging),
``identity`` (an ablation: the renders are injected unrepaired, which isolates what the repair itself adds),
``default`` (the small model shipped with this package), a local folder written by ``save_pretrained`` /
``genfusion-convert`` / ``genfusion-train-video``, or a Hugging Face hub id already in the local cache.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

NONE, RANDOM_TINY, DEFAULT, IDENTITY = "none", "random-tiny", "default", "identity"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "video" / "default_model"


class VideoModelUnavailable(RuntimeError):
    """The requested video model cannot be loaded here; the message says what to do."""


class IdentityRepair:
    """Stands in for the video pipeline and returns its input: rounds still render, inject and train on novel views,
    but nothing is repaired. Clips follow the shipped model's length and resolution."""

    def __init__(self, num_frames: int = 8, height: int = 96, width: int = 96):
        self.config = SimpleNamespace(num_frames=num_frames, height=height, width=width)
        self.device = torch.device("cpu")

    def to(self, *args, **kwargs) -> "IdentityRepair":
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        pass

    def __call__(self, rgb: torch.Tensor, depth: torch.Tensor, reference: torch.Tensor, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(rgb=rgb.clone(), depth=depth.clone())


def shipped_model_dir() -> Path:
    return SHIPPED_MODEL_DIR


def check_video_model_spec(spec: str) -> None:
    """Fail at start-up, not at the first repair round, when the shipped default model is not installed."""
    if spec == DEFAULT and not (shipped_model_dir() / "model_index.json").exists():
        raise VideoModelUnavailable(
            f"the shipped default video model is missing from this installation ({shipped_model_dir()}). Pass "
            "--pipeline.video-model with a converted or trained model folder (genfusion-convert, "
            "genfusion-train-video), 'random-tiny' for a smoke test, or 'none' to train without fusion.")


def load_video_pipeline(spec: str, device: torch.device | str, seed: int = 0):
    """Build the :class:`GenFusionVideoPipeline` named by ``spec`` on ``device`` (fp16 on CUDA, fp32 on CPU).

    Returns ``None`` for ``"none"``.
    """
    from genfusion_ns.video import GenFusionVideoPipeline

    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if spec == NONE:
        return None
    if spec == IDENTITY:
        return IdentityRepair()
    if spec == RANDOM_TINY:
        pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=seed)
    else:
        check_video_model_spec(spec)
        location = shipped_model_dir() if spec == DEFAULT else spec
        try:
            pipe = GenFusionVideoPipeline.from_pretrained(str(location), torch_dtype=dtype)
        except OSError as error:
            raise VideoModelUnavailable(str(error)) from error
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def release_from_accelerator(pipe) -> None:
    """Move a pipeline back to host memory between rounds so reconstruction gets the GPU memory."""
    if pipe is not None and pipe.device.type == "cuda":
        pipe.to("cpu")
        torch.cuda.empty_cache()

