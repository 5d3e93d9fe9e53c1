"""Repaired training views: a camera batch plus colour and depth, and their on-disk form (PNG + .npy + manifest)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from genfusion_ns.outputs import partial_folder, replaced_on_success

MANIFEST_NAME = "manifest.json"


@dataclass
class RepairedViews:
    """``N`` repaired frames. Poses are nerfstudio camera-to-world ``[N,3,4]`` (OpenGL) in the dataparser's frame;
    intrinsics are per view; ``rgb`` is uint8 ``[N,H,W,3]``; ``depth`` float32 ``[N,H,W]`` in scene units.
    ``input_rgb`` (uint8, optional) is the render the video model repaired, kept to show and measure the repair;
    ``input_depth`` (float32, optional, in memory only) the render's z-depth, which the training-view check warps
    with. ``weights`` (float32 ``[N]``, optional: all 1) scales each frame's repaired-view loss, 0 = never trained
    on; ``checks`` holds what the check (``genfusion_ns/fusion/agreement.py``) decided per frame. Both are written
    to the manifest; folders written before they existed load with ``weights`` / ``checks`` None. ``loss_masks``
    (bool or float in [0, 1] ``[N,H,W]``, optional: every pixel at 1) weighs each frame's pixels in its loss
    (``mask_XXXX.png``, 8-bit grey, white = 1; nerfstudio's ``batch["mask"]``); it loads as float32."""

    camera_to_worlds: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    rgb: torch.Tensor
    depth: torch.Tensor
    round_index: int
    step: int
    input_rgb: torch.Tensor | None = None
    input_depth: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    checks: Optional[List[Dict[str, object]]] = None
    loss_masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.camera_to_worlds.shape[0])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[2])

    @property
    def frame_weights(self) -> torch.Tensor:
        """Per-frame loss weights ``[N]`` (1 where no check set them)."""
        if self.weights is None:
            return torch.ones(len(self))
        return self.weights.float().reshape(len(self))

    def use_renders(self, where: torch.Tensor) -> None:
        """Train on the render instead of the repair where ``where`` is set: whole frames (bool ``[N]``) or pixels
        (bool ``[N,H,W]``); colour and depth there become the render's (``input_rgb`` / ``input_depth``), which must
        be present."""
        if self.input_rgb is None or self.input_depth is None:
            raise ValueError("use_renders needs the renders (input_rgb and input_depth) the frames were repaired from")
        where = where.to(torch.bool).cpu()
        where = where.reshape(len(self), 1, 1).expand(self.depth.shape) if where.dim() == 1 else where
        self.rgb = torch.where(where[..., None], self.input_rgb.to(self.rgb.dtype), self.rgb)
        self.depth = torch.where(where, self.input_depth.to(self.depth), self.depth)

    def save(self, folder: Path, scene_to_file_depth: float = 1.0) -> Tuple[List[Path], List[Path]]:
        """Write ``frame_XXXX.png`` / ``depth_XXXX.npy`` and a manifest; returns the image and depth paths.

        The files are written into ``<folder>.partial`` and renamed into place at the end, so ``folder`` is either
        complete or absent (an interrupted round leaves no half-written folder that a resume would load). Depth files
        are written in the dataset's file units (``scene_to_file_depth`` converts), so nerfstudio's depth loader
        reads them like the dataset's own depth files.
        """
        folder = Path(folder)
        partial = partial_folder(folder)
        shutil.rmtree(partial, ignore_errors=True)  # an interrupted save of this round
        partial.mkdir(parents=True)
        # A folder already there is this round's, written before a crash that came before its checkpoint.
        with replaced_on_success(partial, folder):
            frames = [self._save_frame(partial, i, scene_to_file_depth) for i in range(len(self))]
            manifest = {"round": self.round_index, "step": self.step, "width": self.width, "height": self.height,
                        "scene_to_file_depth": scene_to_file_depth, "frames": frames}
            (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        return self.file_paths(folder)

    def _save_frame(self, folder: Path, i: int, scene_to_file_depth: float) -> dict:
        image_path, depth_path = self._frame_names(i)
        Image.fromarray(self.rgb[i].cpu().numpy()).save(folder / image_path)
        np.save(folder / depth_path, (self.depth[i].cpu().numpy() * scene_to_file_depth).astype(np.float32))
        frame = {
            "image": image_path, "depth": depth_path, "camera_to_world": self.camera_to_worlds[i].tolist(),
            "fx": float(self.fx[i]), "fy": float(self.fy[i]), "cx": float(self.cx[i]), "cy": float(self.cy[i]),
        }
        if self.input_rgb is not None:
            frame["input"] = f"input_{i:04d}.png"
            Image.fromarray(self.input_rgb[i].cpu().numpy()).save(folder / frame["input"])
        if self.weights is not None:
            frame["weight"] = float(self.weights[i])
        if self.loss_masks is not None:
            frame["mask"] = f"mask_{i:04d}.png"
            weights = self.loss_masks[i].float().clamp(0.0, 1.0).cpu().numpy()
            Image.fromarray(np.round(weights * 255.0).astype(np.uint8)).save(folder / frame["mask"])
        if self.checks is not None:
            frame["check"] = self.checks[i]
        return frame

    @staticmethod
    def _frame_names(i: int) -> Tuple[str, str]:
        return f"frame_{i:04d}.png", f"depth_{i:04d}.npy"

    def file_paths(self, folder: Path) -> Tuple[List[Path], List[Path]]:
        """Image and depth files of these views in ``folder`` (as :meth:`save` names them)."""
        names = [self._frame_names(i) for i in range(len(self))]
        return [Path(folder) / image for image, _ in names], [Path(folder) / depth for _, depth in names]

    @classmethod
    def load(cls, folder: Path) -> "RepairedViews":
        """Read a folder written by :meth:`save`; raises ``ValueError`` naming the folder when it is damaged."""
        try:
            return cls._load(Path(folder))
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as error:
            raise ValueError(f"{folder}: {type(error).__name__}: {error}") from error

    @classmethod
    def _load(cls, folder: Path) -> "RepairedViews":
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        frames = manifest["frames"]
        if not frames:
            raise ValueError("the manifest lists no frames")
        rgb = np.stack([np.asarray(Image.open(folder / f["image"]).convert("RGB")) for f in frames])
        depth = np.stack([np.load(folder / f["depth"]) for f in frames]) / manifest["scene_to_file_depth"]
        if rgb.shape[:3] != depth.shape:
            raise ValueError(f"frames {rgb.shape[:3]} and depth maps {depth.shape} differ in size")
        column = lambda key: torch.tensor([f[key] for f in frames], dtype=torch.float32)  # noqa: E731
        input_rgb = None
        if all("input" in f for f in frames):
            input_rgb = torch.from_numpy(
                np.stack([np.asarray(Image.open(folder / f["input"]).convert("RGB")) for f in frames]))
        weights = column("weight") if all("weight" in f for f in frames) else None  # older rounds: no weights
        checks = [f["check"] for f in frames] if all("check" in f for f in frames) else None
        loss_masks = None
        if all("mask" in f for f in frames):
            loss_masks = torch.from_numpy(np.stack([np.asarray(Image.open(folder / f["mask"]).convert("L"))
                                                    for f in frames]).astype(np.float32) / 255.0)
            if loss_masks.shape != depth.shape:
                raise ValueError(f"loss masks {tuple(loss_masks.shape)} and depth maps {depth.shape} differ in size")
        if weights is not None and not bool(torch.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError("the manifest's frame weights must be finite and >= 0")
        return cls(
            camera_to_worlds=torch.tensor([f["camera_to_world"] for f in frames], dtype=torch.float32),
            fx=column("fx"), fy=column("fy"), cx=column("cx"), cy=column("cy"),
            rgb=torch.from_numpy(rgb), depth=torch.from_numpy(depth.astype(np.float32)),
            round_index=int(manifest["round"]), step=int(manifest["step"]), input_rgb=input_rgb,
            weights=weights, checks=checks, loss_masks=loss_masks,
        )
