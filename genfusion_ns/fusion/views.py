"""Repaired training views: a camera batch plus colour and depth, and their on-disk form (PNG + .npy + manifest)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image

MANIFEST_NAME = "manifest.json"


@dataclass
class RepairedViews:
    """``N`` repaired frames. Poses are nerfstudio camera-to-world ``[N,3,4]`` (OpenGL) in the dataparser's frame;
    intrinsics are per view; ``rgb`` is uint8 ``[N,H,W,3]``; ``depth`` float32 ``[N,H,W]`` in scene units.
    ``input_rgb`` (uint8, optional) is the render the video model repaired, kept to show and measure the repair."""

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

    def __len__(self) -> int:
        return int(self.camera_to_worlds.shape[0])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[2])

    def save(self, folder: Path, scene_to_file_depth: float = 1.0) -> Tuple[List[Path], List[Path]]:
        """Write ``frame_XXXX.png`` / ``depth_XXXX.npy`` and a manifest; returns the image and depth paths.

        Depth files are written in the dataset's file units (``scene_to_file_depth`` converts), so nerfstudio's
        depth loader reads them like the dataset's own depth files.
        """
        folder.mkdir(parents=True, exist_ok=True)
        frames, image_paths, depth_paths = [], [], []
        for i in range(len(self)):
            image_path, depth_path = folder / f"frame_{i:04d}.png", folder / f"depth_{i:04d}.npy"
            Image.fromarray(self.rgb[i].cpu().numpy()).save(image_path)
            np.save(depth_path, (self.depth[i].cpu().numpy() * scene_to_file_depth).astype(np.float32))
            image_paths.append(image_path)
            depth_paths.append(depth_path)
            frame = {
                "image": image_path.name, "depth": depth_path.name,
                "camera_to_world": self.camera_to_worlds[i].tolist(),
                "fx": float(self.fx[i]), "fy": float(self.fy[i]), "cx": float(self.cx[i]), "cy": float(self.cy[i]),
            }
            if self.input_rgb is not None:
                input_path = folder / f"input_{i:04d}.png"
                Image.fromarray(self.input_rgb[i].cpu().numpy()).save(input_path)
                frame["input"] = input_path.name
            frames.append(frame)
        manifest = {"round": self.round_index, "step": self.step, "width": self.width, "height": self.height,
                    "scene_to_file_depth": scene_to_file_depth, "frames": frames}
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        return image_paths, depth_paths

    @classmethod
    def load(cls, folder: Path) -> "RepairedViews":
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
        frames = manifest["frames"]
        rgb = np.stack([np.asarray(Image.open(Path(folder) / f["image"]).convert("RGB")) for f in frames])
        depth = np.stack([np.load(Path(folder) / f["depth"]) for f in frames]) / manifest["scene_to_file_depth"]
        column = lambda key: torch.tensor([f[key] for f in frames], dtype=torch.float32)  # noqa: E731
        input_rgb = None
        if frames and all("input" in f for f in frames):
            input_rgb = torch.from_numpy(
                np.stack([np.asarray(Image.open(Path(folder) / f["input"]).convert("RGB")) for f in frames]))
        return cls(
            camera_to_worlds=torch.tensor([f["camera_to_world"] for f in frames], dtype=torch.float32),
            fx=column("fx"), fy=column("fy"), cx=column("cx"), cy=column("cy"),
            rgb=torch.from_numpy(rgb), depth=torch.from_numpy(depth.astype(np.float32)),
            round_index=int(manifest["round"]), step=int(manifest["step"]), input_rgb=input_rgb,
        )
