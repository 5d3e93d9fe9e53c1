"""``genfusion-bench`` options: which scenes, methods and protocols form the grid, and the run budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genfusion_ns.devices import DeviceUnavailable, resolve_device

GPU_METHODS = ("genfusion", "genfusion-2dgs", "splatfacto")
CPU_METHODS = ("genfusion-lite", "genfusion-2dgs-lite")
CUDA_ONLY_METHODS = ("splatfacto",)
"""nerfstudio's splatfacto rasterizes with gsplat's CUDA kernels only."""
PAPER_PROTOCOLS = ("sparse-3", "sparse-6", "sparse-9", "masked-2", "masked-4", "dense")
GENERATE = "generate"


class BenchError(RuntimeError):
    """The bench cannot run as asked; the message says what to change."""


@dataclass
class BenchConfig:
    """Train and evaluate methods on scenes under the paper's protocols; write a resumable report folder."""

    output: Path = Path("genfusion-bench")
    """Report folder; running again with the same folder resumes (finished cells are not recomputed)."""
    scenes: tuple[str, ...] = (GENERATE,)
    """nerfstudio dataset folders, or 'generate' for procedural scenes (see --num-scenes, --seed)."""
    num_scenes: int = 1
    """Procedural scenes to generate with --scenes generate."""
    seed: int = 0
    """Seed of the first generated scene (the next ones use seed+1, ...) and of the masked patch paths."""
    scene_views: int = 24
    """Views per generated scene."""
    scene_resolution: int = 96
    """Image height of generated scenes, in pixels."""
    scene_kind: Literal["room", "object", "street"] = "room"
    """Kind of the generated scenes."""
    scene_textures: Literal["procedural", "photo"] = "procedural"
    """Surface textures of the generated scenes (genfusion-scene --textures)."""
    methods: tuple[str, ...] | None = None
    """nerfstudio methods; default: genfusion, genfusion-2dgs and splatfacto with CUDA, the -lite variants on CPU."""
    protocols: tuple[str, ...] = PAPER_PROTOCOLS
    """'sparse-N' (N training views), 'masked-K' (moving W/2 x H/2 patch, every K-th view trains), 'dense'."""
    max_steps: int | None = None
    """Override every method's training steps (repair rounds keep their fractions of training); for CI-sized runs."""
    video_model: str | None = None
    """Video model of the fusion methods ('random-tiny', 'none', a model folder); default: the methods' own."""
    fusion_options: tuple[str, ...] = ()
    """Config fields of the fusion methods as field.path=value (e.g. pipeline.repair_strength_last=0.25
    pipeline.model.exposure_compensation=true); values are JSON or plain strings."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the methods train ('auto': CUDA when visible)."""
    depth_tolerance: float = 0.05
    """Occlusion tolerance of the sparse protocol's point filtering (fraction of the view's depth)."""
    render_views: int = 3
    """Held-out views per comparison picture."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice; 1 is fastest on an oversubscribed machine)."""

    def resolved_device(self) -> str:
        try:
            return resolve_device(self.device)
        except DeviceUnavailable as error:
            raise BenchError(str(error)) from None

    def resolved_methods(self) -> tuple[str, ...]:
        device = self.resolved_device()
        methods = (
            self.methods if self.methods is not None else (GPU_METHODS if device == "cuda" else CPU_METHODS)
        )
        if not methods:
            raise BenchError("--methods is empty; name at least one nerfstudio method.")
        if device != "cuda":
            cuda_only = [m for m in methods if m in CUDA_ONLY_METHODS]
            if cuda_only:
                raise BenchError(
                    f"{cuda_only} need CUDA (gsplat kernels); drop them from --methods on this machine."
                )
        return tuple(dict.fromkeys(methods))

    def validate(self) -> None:
        if not self.scenes:
            raise BenchError("--scenes is empty; pass dataset folders or 'generate'.")
        if self.num_scenes < 1:
            raise BenchError(f"--num-scenes must be >= 1, got {self.num_scenes}.")
        if self.max_steps is not None and self.max_steps < 2:
            raise BenchError(f"--max-steps must be >= 2, got {self.max_steps}.")
        if self.render_views < 1:
            raise BenchError(f"--render-views must be >= 1, got {self.render_views}.")
        if not self.protocols:
            raise BenchError("--protocols is empty; choose from " + ", ".join(PAPER_PROTOCOLS) + ".")
        self.resolved_methods()
