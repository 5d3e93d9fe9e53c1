"""``genfusion-demo``: the README's main job in one command.

Generates the default scene, trains the listed methods on it in-process (nerfstudio's own training loop), evaluates
each on the held-out views and writes ``metrics.md`` / ``metrics.json`` and a side-by-side ``comparison.png``
(ground truth | each method) into one output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import tyro
from rich.console import Console
from rich.table import Table

CONSOLE = Console()


@dataclass
class DemoConfig:
    """Generate the default scene, train and evaluate GenFusion methods on it, and write a report."""

    out: Path = Path("demo")
    """Output folder (scene, runs, metrics, pictures)."""
    methods: Tuple[str, ...] = ("genfusion-2dgs-lite",)
    """nerfstudio methods to train and compare."""
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
    if config.out.exists() and any(config.out.iterdir()):
        if not config.overwrite:
            raise DemoError(f"{config.out} already has files; pass --overwrite to replace them or choose another --out.")
        shutil.rmtree(config.out)
    config.out.mkdir(parents=True, exist_ok=True)


def _train(method: str, scene: Path, runs: Path, config: DemoConfig) -> Path:
    """Train ``method`` in-process with nerfstudio's training loop; returns the run's ``config.yml``."""
    from genfusion_ns.bench.runs import RunError, train_in_process, trainer_config

    try:
        trainer = trainer_config(method, scene, runs, experiment_name=method, timestamp="demo", device=config.device,
                                 max_steps=config.max_steps)
    except RunError as error:
        raise DemoError(str(error)) from error
    return train_in_process(trainer)


def _evaluate(config_path: Path, render_dir: Path) -> Dict[str, float]:
    from genfusion_ns.bench.runs import evaluate_run

    return evaluate_run(config_path, render_dir).metrics


def _comparison(render_dirs: Dict[str, Path], out: Path, max_views: int = 4) -> Optional[Path]:
    """Rows = held-out views; columns = ground truth, then each method's render."""
    from genfusion_ns.bench.pictures import comparison_picture

    return comparison_picture(render_dirs, out / "comparison.png", max_views=max_views)


def run_demo(config: DemoConfig) -> Dict[str, Dict[str, float]]:
    from genfusion_ns.scenes import generate_scene

    _prepare_output(config)
    start = time.perf_counter()
    CONSOLE.rule("[bold]1. Scene")
    summary = generate_scene(config.out / "scene", seed=config.seed, views=config.views,
                             train_views=config.train_views, resolution=config.resolution)
    CONSOLE.print(f"{len(summary.train_indices)} training and {len(summary.test_indices)} held-out views in {summary.out}")
    results: Dict[str, Dict[str, float]] = {}
    render_dirs: Dict[str, Path] = {}
    for i, method in enumerate(config.methods, start=2):
        CONSOLE.rule(f"[bold]{i}. Train {method}")
        t0 = time.perf_counter()
        config_path = _train(method, summary.out, config.out / "runs", config)
        train_seconds = time.perf_counter() - t0
        CONSOLE.rule(f"[bold]Evaluate {method} on the held-out views")
        render_dirs[method] = config.out / "renders" / method
        results[method] = {**_evaluate(config_path, render_dirs[method]), "train_seconds": train_seconds}
    _write_report(config, results, render_dirs, time.perf_counter() - start)
    return results


def _write_report(config: DemoConfig, results: Dict[str, Dict[str, float]], render_dirs: Dict[str, Path],
                  seconds: float) -> None:
    columns = ["psnr", "ssim", "lpips", "train_seconds"]
    table = Table(title=f"Held-out views of the demo scene ({config.train_views} training views)")
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    table.add_column("method")
    for c in columns:
        table.add_column(c)
    for method, metrics in results.items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "n/a" for c in columns]
        table.add_row(method, *cells)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (config.out / "metrics.md").write_text("\n".join(lines) + "\n")
    (config.out / "metrics.json").write_text(json.dumps(results, indent=2))
    picture = _comparison(render_dirs, config.out)
    CONSOLE.print(table)
    CONSOLE.print(f"Report in {config.out} (metrics.md, metrics.json{', comparison.png' if picture else ''}); "
                  f"total {seconds / 60:.1f} min.")


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
