"""How much of a masked-protocol score is reachable at all: the held-out pixels no training patch ever saw.

Under ``masked-K`` every training photo is cut to a W/2 x H/2 patch, and the held-out views are scored on the full
frame. A held-out pixel whose surface point (exact, from the generated scene's geometry) falls inside no training
patch, unoccluded, was never observed: no reconstruction can know it, and a video model can only guess it from its
prior. This script splits each run's held-out PSNR into photographed and never-photographed pixels (and counts the
photographed pixels a floater hides: rendered more than 15 % in front of the true surface) and prints two ceilings
for a method that keeps its own observed pixels and fills the never-observed ones with

- ``mean``: the ground truth's own mean colour of those pixels in that view (a perfect flat guess), and
- ``blur``: the ground truth blurred with a Gaussian of ``--blur-sigma`` pixels (a perfect low-frequency guess),

so a PSNR goal can be compared with what a generator that gets everything right but the unseen textures could score.

    python benchmarks/masked_ceiling.py --scene OUT/scenes/room-s300-masked-2 \
        --dataset OUT/datasets/room-s300-masked-2/masked-2 --runs RUN/config.yml [RUN2/config.yml ...]

``--scene`` is the generated scene (its ``scene.json`` rebuilds the ground truth), ``--dataset`` the masked
dataset the runs trained on (``masked_protocol.json`` has the patches), as ``benchmarks/fusion_gain.py
--protocol masked-K`` writes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from genfusion_ns.model.metrics import psnr
from genfusion_ns.protocols.common import project_points
from genfusion_ns.scenes import render_scene_views


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="generated scene folder (with scene.json)")
    parser.add_argument("--dataset", type=Path, required=True, help="masked dataset (with masked_protocol.json)")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="config.yml of each trained run")
    parser.add_argument("--blur-sigma", type=float, default=3.0, help="Gaussian sigma in pixels of the blur ceiling")
    parser.add_argument("--depth-tolerance", type=float, default=0.02,
                        help="relative depth difference under which a training view sees a point (occlusion test)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def scene_cameras(scene: Path) -> tuple[dict, dict[str, int]]:
    meta = json.loads((scene / "transforms.json").read_text())
    names = {Path(frame["file_path"]).name: i for i, frame in enumerate(meta["frames"])}
    return meta, names


def truth_views(scene: Path, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth colour, z-depth and OpenGL camera-to-world of every frame of the scene."""
    poses = np.stack([np.asarray(f["transform_matrix"], dtype=np.float64) for f in meta["frames"]])
    n = len(poses)
    ones = np.ones(n)
    rgb, depth = render_scene_views(scene, poses, meta["fl_x"] * ones, meta["fl_y"] * ones, meta["cx"] * ones,
                                    meta["cy"] * ones, int(meta["w"]), int(meta["h"]))
    return rgb, depth, poses


def observed_mask(index: int, depth: np.ndarray, poses: np.ndarray, meta: dict,
                  patches: dict[int, tuple[int, int, int, int]], tolerance: float) -> np.ndarray:
    """Pixels of frame ``index`` whose surface point lies, unoccluded, inside some training patch."""
    h, w = depth.shape[1:]
    fx, fy, cx, cy = meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    z = depth[index]
    points_cam = np.stack([(u - cx) / fx * z, -(v - cy) / fy * z, -z, np.ones_like(z)], axis=-1).reshape(-1, 4)
    points_world = (points_cam @ poses[index].T)[:, :3]
    seen = np.zeros(h * w, dtype=bool)
    for train_index, (px, py, pw, ph) in patches.items():
        ut, vt, zt = project_points(points_world, meta, meta["frames"][train_index])
        inside = (zt > 1e-6) & (ut >= px) & (ut < px + pw) & (vt >= py) & (vt < py + ph)
        ui = np.clip(ut.astype(int), 0, w - 1)
        vi = np.clip(vt.astype(int), 0, h - 1)
        surface = depth[train_index][vi, ui]
        unoccluded = np.abs(zt - surface) <= tolerance * np.maximum(surface, 1e-6)
        seen |= inside & unoccluded
    return seen.reshape(h, w) & (z > 0)


def training_patches(dataset: Path, names: dict[str, int]) -> dict[int, tuple[int, int, int, int]]:
    protocol = json.loads((dataset / "masked_protocol.json").read_text())
    return {names[Path(p["file_path"]).name]: (p["x"], p["y"], p["width"], p["height"])
            for p in protocol["patches"] if p["split"] == "train"}


def held_out_renders(config: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The run's render of each held-out view (the latest checkpoint, as ``ns-eval`` renders it) and its z-depth in
    the dataset's units, by image file name."""
    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    dataset = pipeline.datamanager.eval_dataset
    outputs = dataset._dataparser_outputs
    renders = {}
    for index, filename in enumerate(outputs.image_filenames):
        with torch.no_grad():
            out = pipeline.model.get_outputs_for_camera(dataset.cameras[index : index + 1].to(pipeline.device))
        rgb = out["rgb"].double().cpu().numpy()
        depth = out["depth"][..., 0].double().cpu().numpy() / float(outputs.dataparser_scale)
        renders[Path(filename).name] = (rgb, depth)
    return renders


def score_run(renders: dict[str, tuple[np.ndarray, np.ndarray]], truth: np.ndarray, truth_depth: np.ndarray,
              masks: dict[int, np.ndarray], names: dict[str, int], sigma: float) -> dict[str, float]:
    """Mean over held-out views of PSNR overall, on photographed / never-photographed pixels, the two ceilings, and
    the share of photographed pixels rendered more than 15 % in front of the true surface (floaters)."""
    keys = ("all", "observed", "unobserved", "mean", "blur", "fraction", "in_front")
    sums: dict[str, list[float]] = {k: [] for k in keys}
    for name, (render, depth) in renders.items():
        index = names[name]
        gt, seen = truth[index], masks[index]
        if render.shape != gt.shape:
            raise SystemExit(f"render of {name} is {render.shape}, the scene's frame {gt.shape}: score at full size")
        sums["all"].append(psnr(render, gt))
        sums["observed"].append(psnr(render[seen], gt[seen]) if seen.any() else float("nan"))
        sums["unobserved"].append(psnr(render[~seen], gt[~seen]) if (~seen).any() else float("nan"))
        sums["fraction"].append(float((~seen).mean()))
        sums["in_front"].append(float((depth[seen] < 0.85 * truth_depth[index][seen]).mean()) if seen.any() else 0.0)
        flat = render.copy()
        flat[~seen] = gt[~seen].mean(0)
        sums["mean"].append(psnr(flat, gt))
        blurred = np.stack([gaussian_filter(gt[..., c], sigma) for c in range(3)], axis=-1)
        smooth = render.copy()
        smooth[~seen] = blurred[~seen]
        sums["blur"].append(psnr(smooth, gt))
    return {k: float(np.nanmean(v)) for k, v in sums.items()}


def main() -> None:
    args = parse_args()
    meta, names = scene_cameras(args.scene)
    truth, depth, poses = truth_views(args.scene, meta)
    patches = training_patches(args.dataset, names)
    masks = {i: observed_mask(i, depth, poses, meta, patches, args.depth_tolerance) for i in range(len(poses))}
    rows = []
    for config in args.runs:
        figures = score_run(held_out_renders(config), truth, depth, masks, names, args.blur_sigma)
        rows.append({"run": str(config), **figures})
    print(f"| run | held-out PSNR | photographed pixels | never-photographed pixels (share) | ceiling, flat fill | "
          f"ceiling, blur fill (sigma {args.blur_sigma:g}) | photographed pixels rendered > 15 % in front |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['all']:.2f} | {row['observed']:.2f} | {row['unobserved']:.2f} "
              f"({100 * row['fraction']:.0f} %) | {row['mean']:.2f} | {row['blur']:.2f} | "
              f"{100 * row['in_front']:.1f} % |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
