"""How well could a *perfect* scene model score on the held-out views of a ``genfusion-scene`` dataset?

The dataset's images are anti-aliased (each pixel averages ``supersample``² sub-pixel rays). A splat renderer, ours
and gsplat's alike, evaluates the scene's colour at one point per pixel (its centre). This script scores two ideal
models against the held-out images, with the scene's exact geometry and textures, so the reconstruction benchmark's
numbers can be read against what point-sampled rendering can reach at all:

- ``exact field, centre sample``: the true surface colours sampled at pixel centres (a perfect sharp reconstruction
  rendered by a point-sampling renderer);
- ``pre-filtered field, centre sample``: the true colours box-filtered over one pixel footprint, then sampled at the
  centre (the best any point-sampling renderer can do when the field itself is consistent across views).

Example (the figures in docs/benchmarks.md)::

    python benchmarks/aliasing_ceiling.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from scipy.ndimage import uniform_filter

from genfusion_ns.model.metrics import psnr
from genfusion_ns.scenes.config import SceneConfig
from genfusion_ns.scenes.dataset import split_indices
from genfusion_ns.scenes.generate import build_scene
from genfusion_ns.scenes.layout import LAYOUTS
from genfusion_ns.scenes.render import render_view

FINE = 4
"""Fine samples per pixel and axis of the reference render the pre-filtered field is made from."""


def centre_samples(fine: np.ndarray) -> np.ndarray:
    """Value at each pixel centre of a ``FINE``-times finer image (the centre lies between two fine samples)."""
    lo, hi = FINE // 2 - 1, FINE // 2
    return 0.5 * (fine[lo::FINE, lo::FINE] + fine[hi::FINE, hi::FINE])


def score_scene(config: SceneConfig) -> dict[str, float]:
    """Mean held-out PSNR of the two ideal models on one scene (same cameras and split as ``genfusion-scene``)."""
    layout, cameras, _ = build_scene(config)
    fine_cameras = replace(cameras, fx=cameras.fx * FINE, fy=cameras.fy * FINE, cx=cameras.cx * FINE,
                           cy=cameras.cy * FINE, width=cameras.width * FINE, height=cameras.height * FINE)
    _, held_out = split_indices(config.views, config.train_views)
    exact, prefiltered = [], []
    for index in held_out:
        target = render_view(layout, cameras, index, config.supersample).rgb
        exact.append(psnr(render_view(layout, cameras, index, 1).rgb, target))
        fine = render_view(layout, fine_cameras, index, 2).rgb
        prefiltered.append(psnr(centre_samples(uniform_filter(fine, size=(FINE, FINE, 1), mode="nearest")), target))
    return {"exact": float(np.mean(exact)), "prefiltered": float(np.mean(prefiltered))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kind", choices=sorted(LAYOUTS), default="room")
    parser.add_argument("--train-views", default="all", help="'all' (dense hold-out) or a count")
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=96)
    args = parser.parse_args()
    train_views = args.train_views if args.train_views == "all" else int(args.train_views)
    print("| scene | exact field, centre sample | pre-filtered field, centre sample |")
    print("|---|---|---|")
    for seed in args.seeds:
        config = SceneConfig(seed=seed, kind=args.kind, views=args.views, train_views=train_views,
                             resolution=args.resolution)
        scores = score_scene(config)
        print(f"| {args.kind}-s{seed}-{args.train_views} | {scores['exact']:.2f} dB | {scores['prefiltered']:.2f} dB |")


if __name__ == "__main__":
    main()
