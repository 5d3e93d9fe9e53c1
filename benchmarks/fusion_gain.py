"""Fusion gain: GenFusion (with a video model) against its diffusion-free baseline on generated scenes.

For every seed it generates a ``genfusion-scene`` room with ``--train-views`` training views (the other views are held
out), or, with ``--protocol sparse-N|masked-K``, a scene with every view and the protocol dataset ``genfusion-bench``
makes of it (same tools, same seed points, the fusion method on the ``crop`` trajectory for masked inputs); trains the baseline (``genfusion-2dgs[-lite]``) and the fusion method (``genfusion[-lite]`` with
``--video-model``), and scores both on the held-out views exactly as ``ns-eval`` does. It also scores the repair on
its own: every frame the video model repaired is compared with the scene's exact ground truth from that camera
(procedural scenes can be rendered from anywhere), next to the render that went into the model, over all frames and
over the frames the repaired-frame check kept (``--frame-check``; with ``measure`` the check only records what it
would keep, so one run shows whether it picks the frames that hurt).

Example (the table in docs/benchmarks.md)::

    python benchmarks/fusion_gain.py --out-dir /tmp/gf-gain --seeds 300 301 302 --threads 1
    python benchmarks/fusion_gain.py --out-dir /tmp/gf-gain-off --seeds 300 301 302 --threads 1 --only fusion \
        --frame-check measure
    python benchmarks/fusion_gain.py --out-dir /tmp/gf-masked --seeds 300 301 --threads 1 --protocol masked-2

The seeds must stay disjoint from the shipped model's training scenes (5000-5299, see README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np
import torch

from genfusion_ns.bench.config import BenchConfig
from genfusion_ns.bench.protocols import Protocol, parse_protocol, prepare_dataset
from genfusion_ns.fusion.agreement import CHECK_MODES
from genfusion_ns.fusion.pipeline import REPAIRED_FOLDER
from genfusion_ns.fusion.views import MANIFEST_NAME, RepairedViews
from genfusion_ns.model.metrics import psnr
from genfusion_ns.runner import apply_overrides, evaluate_run, train_in_process, trainer_config
from genfusion_ns.scenes import generate_scene, render_scene_views

VARIANTS = {"lite": ("genfusion-2dgs-lite", "genfusion-lite"), "full": ("genfusion-2dgs", "genfusion")}
TARGET_GAIN_DB = {"sparse": 3.0, "masked": 3.9}
"""Issue 19's goals: the 3-view sparse gain and the masked protocol's (the paper's +3.9 dB on DL3DV)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="scenes, runs and results.json go here")
    parser.add_argument("--seeds", nargs="+", type=int, default=[300, 301, 302])
    parser.add_argument("--kind", choices=["room", "object"], default="room")
    parser.add_argument("--train-views", type=int, default=3,
                        help="training views of the generated scene (ignored with --protocol)")
    parser.add_argument("--protocol", type=parse_protocol, default=None,
                        help="sparse-N or masked-K, prepared as genfusion-bench does from a scene with every view")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="lite",
                        help="lite: genfusion-lite vs genfusion-2dgs-lite (CPU); full: genfusion vs genfusion-2dgs")
    parser.add_argument("--video-model", default="default", help="--pipeline.video-model of the fusion method")
    parser.add_argument("--max-steps", type=int, default=None, help="override both methods' step count")
    parser.add_argument("--frame-check", choices=CHECK_MODES, default=None,
                        help="--pipeline.repaired-frame-check of the fusion method (default: the method's own)")
    parser.add_argument("--frame-min-gain-db", type=float, default=None,
                        help="--pipeline.repaired-frame-min-gain-db of the fusion method (default: the method's own)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                        help="config fields of the fusion method, e.g. pipeline.repair_strength_last=0.25")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", choices=["baseline", "fusion"], default=None,
                        help="train one side only (e.g. the baselines while the video model is still training)")
    parser.add_argument("--reuse", action="store_true", help="keep finished rows of an earlier results.json")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="results.json of the other side (run with --only elsewhere): its rows join the printed table")
    return parser.parse_args()


def to_dataset_frame(c2w: torch.Tensor, run_dir: Path) -> np.ndarray:
    """Poses in the dataparser's normalised world -> the ``transforms.json`` frame (undo scale, then transform)."""
    record = json.loads((run_dir / "dataparser_transforms.json").read_text())
    transform = np.eye(4)
    transform[:3, :] = np.asarray(record["transform"])
    poses = np.tile(np.eye(4), (c2w.shape[0], 1, 1))
    poses[:, :3, :] = c2w.double().numpy()
    poses[:, :3, 3] /= float(record["scale"])
    return np.linalg.inv(transform)[None] @ poses


def repair_quality(run_dir: Path, scene_dir: Path) -> list[dict[str, object]]:
    """Per round: PSNR of the repaired frames and of the renders that went into the video model, against the truth;
    the same over the frames the repaired-frame check kept (its decision, also in ``measure`` mode); per frame, the
    truth figures next to what the check measured (training data only), to see whether it picks the right frames."""
    rows = []
    for manifest in sorted((run_dir / REPAIRED_FOLDER).glob(f"*/{MANIFEST_NAME}")):
        views = RepairedViews.load(manifest.parent)
        truth, _ = render_scene_views(scene_dir, to_dataset_frame(views.camera_to_worlds, run_dir), views.fx.numpy(),
                                      views.fy.numpy(), views.cx.numpy(), views.cy.numpy(), views.width, views.height)
        repaired = views.rgb.numpy() / 255.0
        repaired_psnr = [float(psnr(repaired[i], truth[i])) for i in range(len(views))]
        row: dict[str, object] = {"round": views.round_index, "step": views.step, "frames": len(views),
                                  "repaired_psnr": float(np.mean(repaired_psnr))}
        input_psnr = None
        if views.input_rgb is not None:
            rendered = views.input_rgb.numpy() / 255.0
            input_psnr = [float(psnr(rendered[i], truth[i])) for i in range(len(views))]
            row["input_psnr"] = float(np.mean(input_psnr))
        if views.checks is not None:
            kept = [i for i, check in enumerate(views.checks) if float(check["weight"]) > 0]
            row["kept_frames"] = len(kept)
            if kept:
                row["kept_repaired_psnr"] = float(np.mean([repaired_psnr[i] for i in kept]))
                if input_psnr is not None:
                    row["kept_input_psnr"] = float(np.mean([input_psnr[i] for i in kept]))
        row["per_frame"] = [
            {"repaired_psnr": round(repaired_psnr[i], 3),
             "input_psnr": None if input_psnr is None else round(input_psnr[i], 3),
             "weight": float(views.frame_weights[i]), "check": None if views.checks is None else views.checks[i]}
            for i in range(len(views))]
        rows.append(row)
    return rows


def prepare_scene(args: argparse.Namespace, seed: int) -> tuple[str, Path, Path]:
    """Name, generated scene (the ground truth) and the dataset the methods train on, for one seed."""
    protocol: Protocol | None = args.protocol
    name = f"{args.kind}-s{seed}-" + (str(args.train_views) if protocol is None else protocol.name)
    scene_dir = args.out_dir / "scenes" / name
    if not (scene_dir / "transforms.json").exists():
        generate_scene(scene_dir, seed=seed, kind=args.kind,
                       train_views="all" if protocol is not None else args.train_views)
    if protocol is None:
        return name, scene_dir, scene_dir
    dataset = prepare_dataset(protocol, scene_dir, args.out_dir / "datasets" / name, seed,
                              BenchConfig.depth_tolerance)
    return name, scene_dir, dataset.path


def run_method(args: argparse.Namespace, method: str, scene_dir: Path, dataset_dir: Path,
               name: str) -> dict[str, object]:
    fusion = method == VARIANTS[args.variant][1]
    trajectory = args.protocol.fusion_trajectory if args.protocol is not None else None
    config = trainer_config(method, dataset_dir, args.out_dir / "runs", name, method, device=args.device,
                            max_steps=args.max_steps, video_model=args.video_model if fusion else None,
                            trajectory=trajectory)
    if fusion and args.frame_check is not None:
        config.pipeline.repaired_frame_check = args.frame_check
    if fusion and args.frame_min_gain_db is not None:
        config.pipeline.repaired_frame_min_gain_db = args.frame_min_gain_db
    if fusion:
        apply_overrides(config, args.overrides)
    start = time.perf_counter()
    config_path = train_in_process(config)
    seconds = time.perf_counter() - start
    evaluation = evaluate_run(config_path)
    row: dict[str, object] = {"scene": name, "method": method, "train_seconds": round(seconds, 1),
                              **{k: round(v, 4) for k, v in evaluation.metrics.items()},
                              "surfels": evaluation.num_surfels}
    if fusion:
        row["video_model"] = args.video_model
        row["frame_check"] = config.pipeline.repaired_frame_check
        row["frame_min_gain_db"] = config.pipeline.repaired_frame_min_gain_db
        row["overrides"] = list(args.overrides)
        row["repair_seconds"] = evaluation.repair_seconds
        row["repair"] = repair_quality(config_path.parent, scene_dir)
    return row


def markdown(rows: list[dict[str, object]], variant: str,
             target_db: float = TARGET_GAIN_DB["sparse"]) -> str:
    """The table of docs/benchmarks.md: one line per scene that has both methods, then the means."""
    baseline, fusion = VARIANTS[variant]
    pairs = []
    for scene in sorted({str(r["scene"]) for r in rows}):
        by_method = {r["method"]: r for r in rows if r["scene"] == scene}
        if baseline in by_method and fusion in by_method:
            pairs.append((scene, by_method[baseline], by_method[fusion]))
    if not pairs:
        have = sorted({str(r["method"]) for r in rows})
        return (f"No scene has both {baseline} and {fusion} rows (have: {', '.join(have) or 'none'}); "
                "pass the other side's results.json with --compare-with to print the table.")
    rounds = ", ".join(str(r["step"]) for r in pairs[0][2].get("repair", [])) or "none"
    lines = [(f"| scene | `{baseline}` PSNR / SSIM | `{fusion}` PSNR / SSIM | gain | "
              f"repaired vs input PSNR, rounds at {rounds} | kept frames: repaired vs input PSNR (kept/all) | "
              "train s (baseline / GenFusion) | repair s |"),
             "|---|---|---|---|---|---|---|---|"]
    per_round: dict[int, list[float]] = {}
    per_round_kept: dict[int, list[float]] = {}
    for scene, b, f in pairs:
        repair = f.get("repair", [])
        for i, r in enumerate(repair):
            if "input_psnr" in r:  # absent when the round kept no input renders
                per_round.setdefault(i, []).append(r["repaired_psnr"] - r["input_psnr"])
            if "kept_input_psnr" in r:
                per_round_kept.setdefault(i, []).append(r["kept_repaired_psnr"] - r["kept_input_psnr"])
        repair_text = " · ".join(
            f"{r['repaired_psnr']:.2f} vs " + (f"{r['input_psnr']:.2f}" if "input_psnr" in r else "n/a") for r in repair
        ) or "no rounds"
        repair_seconds = f.get("repair_seconds")
        lines.append(f"| {scene} | {b['psnr']:.2f} / {b['ssim']:.3f} | {f['psnr']:.2f} / {f['ssim']:.3f} | "
                     f"{float(f['psnr']) - float(b['psnr']):+.2f} | {repair_text} | {kept_text(repair)} | "
                     f"{b['train_seconds']:.0f} / {f['train_seconds']:.0f} | "
                     f"{'n/a' if repair_seconds is None else f'{repair_seconds:.0f}'} |")
    b_psnr = np.mean([float(b["psnr"]) for _, b, _ in pairs])
    f_psnr = np.mean([float(f["psnr"]) for _, _, f in pairs])
    b_ssim = np.mean([float(b["ssim"]) for _, b, _ in pairs])
    f_ssim = np.mean([float(f["ssim"]) for _, _, f in pairs])
    rounds_mean = " · ".join(f"{np.mean(v):+.2f}" for _, v in sorted(per_round.items()))
    kept_mean = " · ".join(f"{np.mean(v):+.2f}" for _, v in sorted(per_round_kept.items())) or "n/a"
    lines.append(f"| **mean** | {b_psnr:.2f} / {b_ssim:.3f} | {f_psnr:.2f} / {f_ssim:.3f} | "
                 f"**{f_psnr - b_psnr:+.2f}** (target ≥ +{target_db:.1f}) | {rounds_mean} | {kept_mean} | | |")
    return "\n".join(lines)


def kept_text(repair: list[dict[str, object]]) -> str:
    """Per round: repaired vs input PSNR over the frames the check kept, and how many it kept."""
    if not repair or all("kept_frames" not in r for r in repair):
        return "no check"
    parts = []
    for r in repair:
        if "kept_frames" not in r:
            parts.append("n/a")
        elif not r["kept_frames"]:
            parts.append(f"none (0/{r['frames']})")
        else:
            inputs = f"{r['kept_input_psnr']:.2f}" if "kept_input_psnr" in r else "n/a"
            parts.append(f"{r['kept_repaired_psnr']:.2f} vs {inputs} ({r['kept_frames']}/{r['frames']})")
    return " · ".join(parts)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results_path = args.out_dir / "results.json"
    rows: list[dict[str, object]] = []
    if args.reuse and results_path.exists():
        rows = json.loads(results_path.read_text())["rows"]
    for seed in args.seeds:
        name, scene_dir, dataset_dir = prepare_scene(args, seed)
        baseline, fusion = VARIANTS[args.variant]
        for method in {"baseline": [baseline], "fusion": [fusion], None: [baseline, fusion]}[args.only]:
            if any(r["scene"] == name and r["method"] == method for r in rows):
                continue  # (use another --out-dir per --frame-check setting)
            rows.append(run_method(args, method, scene_dir, dataset_dir, name))
            results_path.write_text(json.dumps({
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
                "cpu_threads": torch.get_num_threads(), "device": args.device, "variant": args.variant,
                "protocol": None if args.protocol is None else args.protocol.name,
                "video_model": args.video_model, "rows": rows}, indent=2))
    other_rows = json.loads(args.compare_with.read_text())["rows"] if args.compare_with else []
    masked = args.protocol is not None and args.protocol.kind == "masked"
    print(markdown(rows + other_rows, args.variant, TARGET_GAIN_DB["masked" if masked else "sparse"]))


if __name__ == "__main__":
    main()
