"""Resolve ``--pipeline.video-model`` to a video pipeline, lazily, outside the nerfstudio model's checkpoints.

Accepted values: ``none`` (fusion off), ``random-tiny`` (a seeded tiny random model: tests and debugging),
``identity`` (an ablation: the renders are injected unrepaired, which isolates what the repair itself adds),
``default`` (the small model shipped with this package), a local folder written by ``save_pretrained`` /
``genfusion-convert`` / ``genfusion-train-video``, or a Hugging Face hub id already in the local cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genfusion_ns.errors import UserError
from genfusion_ns.video.interface import ClipGeometry, RepairedRGBD, VideoRepairModel

NONE, RANDOM_TINY, DEFAULT, IDENTITY = "none", "random-tiny", "default", "identity"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "video" / "default_model"


class VideoModelUnavailable(UserError, RuntimeError):
    """The requested video model cannot be loaded here; the message says what to do."""


class IdentityRepair:
    """Stands in for the video pipeline and returns its input: rounds still render, inject and train on novel views,
    but nothing is repaired. Clips follow the shipped model's length and resolution."""

    def __init__(self, num_frames: int = 8, height: int = 96, width: int = 96):
        self.config = ClipGeometry(num_frames=num_frames, height=height, width=width)
        self.device = torch.device("cpu")

    def to(self, *args: Any, **kwargs: Any) -> IdentityRepair:
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass

    def __call__(self, rgb: torch.Tensor, depth: torch.Tensor, reference: torch.Tensor, /,
                 **sampling: Any) -> RepairedRGBD:
        """The input clip unchanged; ``reference`` and the sampling settings are accepted and ignored."""
        return RepairedRGBD(rgb=rgb.clone(), depth=depth.clone())


def shipped_model_dir() -> Path:
    return SHIPPED_MODEL_DIR


_CHOICES = ("'default' (the shipped model), a converted or trained model folder (genfusion-convert, "
            "genfusion-train-video), a hub id already in the local cache, 'random-tiny' for a smoke test, or 'none' "
            "to train without fusion")


def check_video_model_spec(spec: str) -> None:
    """Fail at start-up, not at the first repair round, when ``--pipeline.video-model`` cannot be loaded: the
    folder (or cached hub snapshot) must hold a diffusers ``model_index.json`` and every component it lists."""
    if spec not in (NONE, RANDOM_TINY, IDENTITY):
        checked_model_folder(spec)


def checked_model_folder(spec: str) -> Path:
    """The folder a saved-model ``spec`` (``default``, a path or a cached hub id) loads from, checked."""
    if spec == DEFAULT:
        if not (shipped_model_dir() / "model_index.json").exists():
            raise VideoModelUnavailable(
                f"the shipped default video model is missing from this installation ({shipped_model_dir()}). Pass "
                f"--pipeline.video-model with {_CHOICES}.")
        return shipped_model_dir()
    folder = resolve_model_location(spec)
    check_model_folder(folder, spec)
    return folder


def resolve_model_location(spec: str) -> Path:
    """The local folder of ``spec``: a path, or the cached snapshot of a hub id (nothing is downloaded)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise VideoModelUnavailable(f"--pipeline.video-model {spec} is a file, not a model folder; "
                                        f"pass {_CHOICES}.")
        return path
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "model_index.json")
        if isinstance(cached, str):
            return Path(cached).parent
        raise VideoModelUnavailable(
            f"--pipeline.video-model {spec}: no such folder, and no hub model of that id in the local cache (models "
            f"are never downloaded during training). Download it first (huggingface-cli download {spec}) or pass "
            f"{_CHOICES}.")
    raise VideoModelUnavailable(f"--pipeline.video-model {spec}: no such folder (check the path) and not a hub id; "
                                f"pass {_CHOICES}.")


def check_model_folder(folder: Path, spec: str) -> None:
    """``folder`` holds a saved ``GenFusionVideoPipeline``: a readable index and each listed component's files."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise VideoModelUnavailable(f"--pipeline.video-model {spec}: {folder} has no model_index.json, so it is not a "
                                    f"saved video model; pass {_CHOICES}.")
    try:
        entries = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VideoModelUnavailable(f"--pipeline.video-model {spec}: {index} is unreadable ({error}); save the model "
                                    "again (save_pretrained / genfusion-convert).") from None
    if not isinstance(entries, dict):
        raise VideoModelUnavailable(f"--pipeline.video-model {spec}: {index} is not a diffusers model index.")
    for name, value in entries.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2 and value[0]):
            continue
        component = folder / name
        configs = [component / f for f in ("config.json", "scheduler_config.json", "preprocessor_config.json")]
        if not any(c.is_file() for c in configs):
            raise VideoModelUnavailable(f"--pipeline.video-model {spec}: component {name!r} listed in {index} is "
                                        f"missing ({component} has no config); the folder is incomplete, save or "
                                        "copy it again.")
        if name != "scheduler" and not any(component.glob("*.safetensors")) and not any(component.glob("*.bin")):
            raise VideoModelUnavailable(f"--pipeline.video-model {spec}: component {name!r} has no weights "
                                        f"(*.safetensors) in {component}; the folder is incomplete, save or copy it "
                                        "again.")


def load_video_pipeline(spec: str, device: torch.device | str, seed: int = 0,
                        compile_unet: bool = False) -> VideoRepairModel | None:
    """Build the :class:`GenFusionVideoPipeline` named by ``spec`` on ``device`` (fp16 on CUDA, fp32 on CPU), its
    UNet compiled with ``compile_unet`` on CUDA (on CPU the flag is reported and ignored).

    Returns ``None`` for ``"none"`` and :class:`IdentityRepair` for ``"identity"``; every other result is a
    ``GenFusionVideoPipeline``. All satisfy :class:`~genfusion_ns.video.interface.VideoRepairModel`.
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
        location = checked_model_folder(spec)
        try:
            pipe = GenFusionVideoPipeline.from_pretrained(str(location), torch_dtype=dtype)
        except OSError as error:
            raise VideoModelUnavailable(str(error)) from error
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if compile_unet:
        compile_on_cuda(pipe, device)
    return pipe


def compile_on_cuda(pipe: Any, device: torch.device) -> bool:
    """``pipe.enable_torch_compile()`` when it runs on CUDA; elsewhere say that the flag is ignored."""
    if device.type == "cuda":
        pipe.enable_torch_compile()
        return True
    from nerfstudio.utils.rich_utils import CONSOLE

    CONSOLE.print("[yellow]--pipeline.compile-video-unet is for CUDA; the video model runs uncompiled here.")
    return False


def release_from_accelerator(pipe: VideoRepairModel | None) -> None:
    """Move a pipeline back to host memory between rounds so reconstruction gets the GPU memory."""
    if pipe is not None and pipe.device.type == "cuda":
        pipe.to("cpu")
        torch.cuda.empty_cache()

