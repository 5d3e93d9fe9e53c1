"""``genfusion-demo``: the README's main job in one command.

Generates the default scene, trains the listed methods on it (nerfstudio's own training loop; by default the
baseline ``genfusion-2dgs-lite`` and ``genfusion-lite`` with the shipped video model, at the same time in two
processes), evaluates each on the held-out views and writes ``metrics.md`` / ``metrics.json``, a side-by-side
``comparison.png`` (ground truth | baseline | GenFusion, rows named by frame) and ``repaired_clip.png`` (the
last repair round: the render that went into the video model above what it made of it) into one output folder.
It ends by printing the ``ns-viewer`` / ``ns-eval`` / ``ns-export`` / ``ns-render`` commands for its runs
(``<out>/runs/<method>/<method>/demo/config.yml``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

CONSOLE = Console()


@dataclass
class DemoConfig:
    """Generate the default scene, train and evaluate GenFusion methods on it, and write a report."""

    out: Path = Path("demo")
    """Output folder (scene, runs, metrics, pictures)."""
    methods: Tuple[str, ...] = ("genfusion-2dgs-lite", "genfusion-lite")
    """nerfstudio methods to train and compare."""
    video_model: str = "default"
    """Video model of the fusion methods (see ns-train genfusion --pipeline.video-model)."""
    parallel: bool = True
    """Train the methods at the same time, one process each, sharing the CPU threads (on a 2-core machine the two
    default methods take about as long together as the slower one alone)."""
    seed: int = 2024
    """Scene seed (disjoint from the seeds used by tests and benchmarks)."""
    views: int = 24
    train_views: int = 3
    resolution: int = 96
    max_steps: Optional[int] = None
    """Override the methods' training steps (for a quick look)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    overwrite: bool = False
    """Replace an existing non-empty output folder."""


class DemoError(RuntimeError):
    pass


def _prepare_output(config: DemoConfig) -> None:
    """--out must be new, empty, or (with --overwrite) an earlier demo's folder: never a folder the demo did not
    make, nor one holding the --video-model it is asked to use (see genfusion_ns.outputs)."""
    from genfusion_ns.outputs import prepare_output_folder

    prepare_output_folder(config.out, config.overwrite, "genfusion-demo", {"--video-model": config.video_model},
                          flag="--out", error=DemoError)


def _train(method: str, scene: Path, runs: Path, config: DemoConfig) -> Path:
    """Train ``method`` in this process with nerfstudio's training loop; returns the run's ``config.yml``."""
    from genfusion_ns.runner import RunError, train_in_process, trainer_config

    try:
        trainer = trainer_config(method, scene, runs, experiment_name=method, timestamp="demo", device=config.device,
                                 max_steps=config.max_steps, video_model=config.video_model)
    except RunError as error:
        raise DemoError(str(error)) from error
    return train_in_process(trainer)


def _train_logged(method: str, scene: Path, runs: Path, config: DemoConfig, threads: int, log: Path) -> Path:
    """Worker process: train with ``threads`` torch threads, output going to ``log`` (the parent shows progress)."""
    import torch

    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    torch.set_num_threads(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", buffering=1) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
        return _train(method, scene, runs, config)


_STEP_ROW = re.compile(r"^\s*(\d+) \((\d+(?:\.\d+)?)%\)", re.MULTILINE)


def _logged_percent(log: Path) -> float:
    """Share of training done, read from nerfstudio's step table in the log (0 before the first row)."""
    try:
        rows = _STEP_ROW.findall(log.read_text(errors="replace"))
    except OSError:
        return 0.0
    return float(rows[-1][1]) if rows else 0.0


def _train_all(methods: Tuple[str, ...], scene: Path, config: DemoConfig) -> Dict[str, Tuple[Path, float]]:
    """``{method: (config.yml, train seconds)}``, one after the other or in parallel processes."""
    runs = config.out / "runs"
    trained: Dict[str, Tuple[Path, float]] = {}
    if not config.parallel or len(methods) < 2:
        for i, method in enumerate(methods, start=2):
            CONSOLE.rule(f"[bold]{i}. Train {method}")
            t0 = time.perf_counter()
            trained[method] = (_train(method, scene, runs, config), time.perf_counter() - t0)
        return trained
    CONSOLE.rule(f"[bold]2. Train {', '.join(methods)} in parallel")
    threads = max(1, (os.cpu_count() or 1) // len(methods))
    logs = {m: config.out / "logs" / f"{m}.log" for m in methods}
    CONSOLE.print(f"{len(methods)} processes with {threads} torch thread(s) each; full logs in {config.out / 'logs'}")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    t0 = time.perf_counter()
    with ProcessPoolExecutor(len(methods), mp_context=get_context("spawn")) as pool, \
            Progress(*columns, console=CONSOLE) as progress:
        futures = {m: pool.submit(_train_logged, m, scene, runs, config, threads, logs[m]) for m in methods}
        tasks = {m: progress.add_task(m, total=100.0) for m in methods}
        finished: Dict[str, float] = {}
        while len(finished) < len(methods):
            for method, future in futures.items():
                if method in finished:
                    continue
                if future.done():
                    finished[method] = time.perf_counter() - t0
                    progress.update(tasks[method], completed=100.0)
                else:
                    progress.update(tasks[method], completed=_logged_percent(logs[method]))
            time.sleep(1.0)
        for method, future in futures.items():
            try:
                trained[method] = (future.result(), finished[method])
            except DemoError:
                raise
            except Exception as error:  # noqa: BLE001 - report which method failed and where its log is
                raise DemoError(f"training {method} failed ({type(error).__name__}: {error}); see {logs[method]}")
    return trained


def _evaluate(config_path: Path, render_dir: Path) -> Dict[str, float]:
    from genfusion_ns.runner import evaluate_run

    return evaluate_run(config_path, render_dir).metrics


def _comparison(render_dirs: Dict[str, Path], out: Path, configs: Dict[str, Path],
                results: Dict[str, Dict[str, float]], train_views: int, max_views: int = 4) -> Optional[Path]:
    """Rows = held-out views (labelled by image file); columns = ground truth, then each method's render."""
    from genfusion_ns.bench.pictures import comparison_picture, eval_frame_names, method_title

    columns = " | ".join(["ground truth"] + [method_title(m).split("\n")[0] for m in render_dirs])
    frame_names = eval_frame_names(next(iter(configs.values()))) if configs else None
    labels = {m: f"PSNR {r['psnr']:.2f} dB" for m, r in results.items() if "psnr" in r}
    return comparison_picture(render_dirs, out / "comparison.png", max_views=max_views, labels=labels,
                              frame_names=frame_names,
                              title=f"Demo scene, held-out views ({train_views} training views): {columns}")


def _repaired_clip(method: str, config_path: Path, out: Path, max_frames: int = 8) -> Optional[Path]:
    """``repaired_clip.png``: the last round's renders (top), what the video model made of them (bottom)."""
    from genfusion_ns.bench.pictures import repaired_clip_picture
    from genfusion_ns.fusion.pipeline import REPAIRED_FOLDER
    from genfusion_ns.fusion.views import MANIFEST_NAME, RepairedViews

    rounds = sorted((config_path.parent / REPAIRED_FOLDER).glob(f"*/{MANIFEST_NAME}"))
    if not rounds:
        return None
    folder = rounds[-1].parent
    return repaired_clip_picture(RepairedViews.load(folder), out / "repaired_clip.png", max_frames=max_frames,
                                 rounds=len(rounds), method=method, folder_name=folder.name)


def run_demo(config: DemoConfig) -> Dict[str, Dict[str, float]]:
    from genfusion_ns.scenes import generate_scene

    _prepare_output(config)
    start = time.perf_counter()
    CONSOLE.rule("[bold]1. Scene")
    summary = generate_scene(config.out / "scene", seed=config.seed, views=config.views,
                             train_views=config.train_views, resolution=config.resolution)
    CONSOLE.print(f"{len(summary.train_indices)} training and {len(summary.test_indices)} held-out views in {summary.out}")
    trained = _train_all(config.methods, summary.out, config)
    results: Dict[str, Dict[str, float]] = {}
    render_dirs: Dict[str, Path] = {}
    clip = None
    for method, (config_path, train_seconds) in trained.items():
        CONSOLE.rule(f"[bold]Evaluate {method} on the held-out views")
        render_dirs[method] = config.out / "renders" / method
        results[method] = {**_evaluate(config_path, render_dirs[method]), "train_seconds": train_seconds}
        clip = _repaired_clip(method, config_path, config.out) or clip
    configs = {method: config_path for method, (config_path, _) in trained.items()}
    _write_report(config, results, render_dirs, time.perf_counter() - start, clip, configs)
    return results


REPORTED_COLUMNS = ("psnr", "ssim", "lpips", "train_seconds")
"""Columns of metrics.md; metrics.json has each of them for every method (null where metrics.md says n/a)."""
NOT_AVAILABLE_NOTE = ("n/a (null in metrics.json): not computed on this machine; LPIPS needs torchvision's "
                      "AlexNet weights, which are not downloaded at run time (README, Troubleshooting).")


def _metric_records(results: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, Optional[float]]]:
    """What metrics.json holds: every reported column per method (None where it could not be computed), then
    the other numbers nerfstudio gave (e.g. fps)."""
    return {method: {**{c: metrics.get(c) for c in REPORTED_COLUMNS},
                     **{k: v for k, v in metrics.items() if k not in REPORTED_COLUMNS}}
            for method, metrics in results.items()}


def next_commands(configs: Dict[str, Path], out: Path) -> list[str]:
    """nerfstudio commands for the demo's runs, ready to paste (run them from the demo's working folder: the
    run configs hold the output folder as it was given)."""
    commands = []
    for method, config_path in configs.items():
        load = f"--load-config {shlex.quote(str(config_path))}"
        commands += [
            f"ns-viewer {load}",
            f"ns-eval {load} --output-path {shlex.quote(str(out / 'eval' / f'{method}.json'))}",
            f"ns-export gaussian-splat {load} --output-dir {shlex.quote(str(out / 'export' / method))}",
            f"ns-render interpolate {load} --output-path {shlex.quote(str(out / 'videos' / method))}.mp4",
        ]
    return commands


def _write_report(config: DemoConfig, results: Dict[str, Dict[str, float]], render_dirs: Dict[str, Path],
                  seconds: float, clip: Optional[Path] = None,
                  configs: Optional[Dict[str, Path]] = None) -> None:
    configs = configs or {}
    records = _metric_records(results)
    columns = list(REPORTED_COLUMNS)
    table = Table(title=f"Held-out views of the demo scene ({config.train_views} training views)")
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    table.add_column("method")
    for c in columns:
        table.add_column(c)
    missing = False
    for method, record in records.items():
        cells = [f"{record[c]:.4f}" if record[c] is not None else "n/a" for c in columns]
        missing = missing or "n/a" in cells
        table.add_row(method, *cells)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", NOT_AVAILABLE_NOTE]
    (config.out / "metrics.md").write_text("\n".join(lines) + "\n")
    (config.out / "metrics.json").write_text(json.dumps(records, indent=2))
    picture = _comparison(render_dirs, config.out, configs, results, config.train_views)
    CONSOLE.print(table)
    if missing:
        CONSOLE.print(NOT_AVAILABLE_NOTE, highlight=False)
    files = ["metrics.md", "metrics.json"] + (["comparison.png"] if picture else []) + (
        ["repaired_clip.png"] if clip else [])
    CONSOLE.print(f"Report in {config.out} ({', '.join(files)}); total {seconds / 60:.1f} min.")
    if configs:
        CONSOLE.rule("[bold]Next: the runs in nerfstudio")
        CONSOLE.print(f"From {Path.cwd()} (the run configs hold {config.out} as given):", highlight=False,
                      soft_wrap=True)
        for command in next_commands(configs, config.out):
            CONSOLE.print(command, markup=False, highlight=False, soft_wrap=True)  # one line each: pasteable


def entrypoint() -> None:
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    config = tyro.cli(DemoConfig, description=DemoConfig.__doc__)
    try:
        run_demo(config)
    except DemoError as error:
        CONSOLE.print(f"[bold red]genfusion-demo: error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
