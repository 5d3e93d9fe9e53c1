"""Reconstruction benchmark of the diffusion-free baseline (``genfusion-2dgs[-lite]``) on generated scenes.

For every scene kind, seed and training-view count it generates a ``genfusion-scene`` dataset, trains the method
through nerfstudio's Trainer, evaluates the held-out views exactly as ``ns-eval`` does
(``pipeline.get_average_eval_image_metrics``) and prints a Markdown table (also written as JSON next to the runs).
LPIPS appears only where its AlexNet weights are cached locally.

Example (the table in docs/benchmarks.md)::

    python benchmarks/reconstruction.py --out-dir /tmp/gf-bench --train-views all 3 6 9
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch

from genfusion_ns.method_configs import genfusion_2dgs, genfusion_2dgs_lite
from genfusion_ns.nerfstudio_compat import close_event_writers
from genfusion_ns.scenes import generate_scene

METHODS = {"genfusion-2dgs": genfusion_2dgs, "genfusion-2dgs-lite": genfusion_2dgs_lite}
DENSE_TARGET_PSNR = 28.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="where scenes, runs and results.json go")
    parser.add_argument("--method", choices=sorted(METHODS), default="genfusion-2dgs-lite")
    parser.add_argument("--train-views", nargs="+", default=["all", "3", "6", "9"], help="'all' and/or counts")
    parser.add_argument("--kinds", nargs="+", default=["room"], choices=["room", "object"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--views", type=int, default=24, help="total views per scene")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--max-steps", type=int, default=None, help="override the method's step count")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def run_one(args: argparse.Namespace, kind: str, seed: int, train_views: str) -> dict[str, object]:
    """Generate one scene, train on it, evaluate the held-out views; returns one result row."""
    name = f"{kind}-s{seed}-{train_views}"
    scene_dir = args.out_dir / "scenes" / name
    summary = generate_scene(
        scene_dir,
        seed=seed,
        views=args.views,
        train_views=train_views if train_views == "all" else int(train_views),
        resolution=args.resolution,
        kind=kind,
        overwrite=True,
    )
    config = copy.deepcopy(METHODS[args.method].config)
    config.pipeline.datamanager.data = scene_dir
    config.output_dir = args.out_dir / "runs"
    config.experiment_name = name
    config.machine.device_type = args.device
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9  # evaluate once, at the end
    if args.max_steps is not None:
        config.max_num_iterations = args.max_steps
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.pipeline.get_average_eval_image_metrics()
    close_event_writers()  # the next run in this process must not write into this run's event files
    return {
        "scene": name,
        "train_views": len(summary.train_indices),
        "test_views": len(summary.test_indices),
        "steps": config.max_num_iterations,
        "surfels": trainer.pipeline.model.num_points,
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "lpips": metrics.get("lpips"),
        "train_seconds": train_seconds,
        "config": str(config.get_base_dir() / "config.yml"),
    }


def markdown_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| scene | train / test views | steps | surfels | PSNR ↑ | SSIM ↑ | LPIPS ↓ | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lpips = "n/a (no weights)" if row["lpips"] is None else f"{row['lpips']:.3f}"
        lines.append(
            f"| {row['scene']} | {row['train_views']} / {row['test_views']} | {row['steps']} | {row['surfels']} | "
            f"{row['psnr']:.2f} | {row['ssim']:.3f} | {lpips} | {row['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        run_one(args, kind, seed, views) for kind in args.kinds for seed in args.seeds for views in args.train_views
    ]
    header = (
        f"{args.method} on {args.device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads), {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    table = markdown_table(rows)
    (args.out_dir / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    print(header)
    print(table)
    for row in rows:
        if row["scene"].endswith("-all"):
            verdict = "meets" if row["psnr"] >= DENSE_TARGET_PSNR else "misses"
            print(f"dense {row['scene']}: {row['psnr']:.2f} dB {verdict} the {DENSE_TARGET_PSNR} dB target")


if __name__ == "__main__":
    main()
