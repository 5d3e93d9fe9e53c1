"""Repair quality of a video model on ``genfusion-make-data`` windows: RGB PSNR of the repaired clip and of the
artifact render against the captured frames, for several (strength, CFG) settings and both decodings, and what its
VAE alone reconstructs (``decode(encode(x))`` of the captured frames and of the renders, posterior mean).

A quick model-selection check (no reconstruction involved); the windows usually come from the model's own training
data, which flatters it. ``benchmarks/fusion_gain.py`` scores repairs on unseen scenes.

Example (the table in docs/benchmarks.md)::

    python benchmarks/repair_windows.py --model genfusion_ns/video/default_model --data dm/data-sparse
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np
import torch

from diffusion_train.dataset import ClipDataset
from genfusion_ns.model.metrics import psnr
from genfusion_ns.video import GenFusionVideoPipeline
from genfusion_ns.video.preprocess import rgbd_frames


@torch.no_grad()
def vae_round_trip_psnr(pipe: GenFusionVideoPipeline, item: dict[str, torch.Tensor]) -> dict[str, float]:
    """RGB PSNR of ``decode(encode(x))`` (posterior mean) for a window's captured (``target``) and rendered
    (``artifact``) frames, in the model's letterboxed frame codes as the VAE was trained on them."""
    out = {}
    for kind in ("target", "artifact"):
        frames = rgbd_frames(item[f"{kind}_rgb"][None], item[f"{kind}_depth"][None])
        decoded = pipe.vae.decode(pipe.vae.encode(frames).latent_dist.mode()).sample
        out[kind] = psnr(((decoded[:, :3] + 1) / 2).clamp(0, 1), (frames[:, :3] + 1) / 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="pipeline folder")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="genfusion-make-data folders")
    parser.add_argument("--windows", type=int, default=4, help="evenly spaced windows to score")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=["0.5:1.5", "1.0:3.2"], help="strength:cfg pairs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = GenFusionVideoPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    dataset = ClipDataset(args.data, pipe.config.num_frames, pipe.config.height, pipe.config.width)
    picks = [int(i) for i in np.linspace(0, len(dataset) - 1, args.windows)]
    inputs, scores, round_trips = [], {}, {"captured frames": [], "renders": []}
    for index in picks:
        round_trip = vae_round_trip_psnr(pipe, dataset[index])
        round_trips["captured frames"].append(round_trip["target"])
        round_trips["renders"].append(round_trip["artifact"])
        raw = dataset.raw(index)
        inputs.append(psnr(raw["artifact_rgb"], raw["target_rgb"]))
        for setting in args.settings:
            strength, cfg = (float(v) for v in setting.split(":"))
            for residual in (False, True):
                out = pipe(raw["artifact_rgb"], raw["artifact_depth"], raw["target_rgb"][0],
                           num_inference_steps=args.steps, guidance_scale=cfg, strength=strength,
                           residual_decode=residual, generator=torch.Generator().manual_seed(0), output_type="pt")
                key = (strength, cfg, "residual" if residual else "plain")
                scores.setdefault(key, []).append(psnr(out.rgb.clamp(0, 1), raw["target_rgb"]))
    print("| decode | strength / CFG | repaired PSNR | input PSNR |\n|---|---|---|---|")
    for (strength, cfg, decode), values in scores.items():
        print(f"| {decode} | {strength} / {cfg} | {np.mean(values):.2f} | {np.mean(inputs):.2f} |")
    print("\n| VAE round trip of | RGB PSNR |\n|---|---|")
    for name, values in round_trips.items():
        print(f"| {name} | {np.mean(values):.2f} |")


if __name__ == "__main__":
    main()
