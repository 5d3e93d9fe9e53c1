"""``genfusion-bench``: scenes x protocols x methods, trained in-process and scored on the held-out views.

For each cell it prepares the protocol dataset (``genfusion_ns.protocols``), trains the method with nerfstudio's
``train_loop``, evaluates it as ``ns-eval`` does, and records PSNR/SSIM/LPIPS, training and repair time, peak memory
and the number of surfels. The report folder is resumable: a finished cell is never recomputed, an interrupted one
is computed again from scratch (its partial run is the bench's own scratch and is replaced).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genfusion_ns.bench.cells import CELLS_FOLDER, Cell, CellResult, finished_result, write_result
from genfusion_ns.bench.config import GENERATE, BenchConfig, BenchError
from genfusion_ns.bench.memory import PeakMemoryMeter
from genfusion_ns.bench.protocols import PreparedDataset, Protocol, parse_protocol, prepare_dataset
from genfusion_ns.bench.report import format_value, write_report
from genfusion_ns.bench.scenes import BenchScene, resolve_scenes
from genfusion_ns.outputs import exit_with_error, prepare_output_folder

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig

CONSOLE = Console()
COMMAND = "genfusion-bench"
RUN_TIMESTAMP = "bench"


def cell_settings(config: BenchConfig, scene: BenchScene, cell: Cell, device: str) -> dict[str, object]:
    """What a cell's result depends on; a resumed bench reuses a result only if these are unchanged."""
    settings: dict[str, object] = {
        "scene_path": str(scene.path.resolve()),
        "method": cell.method,
        "protocol": cell.protocol,
        "max_steps": config.max_steps,
        "video_model": config.video_model,
        "device": device,
        "seed": config.seed,
        "depth_tolerance": config.depth_tolerance,
    }
    if config.fusion_options:  # absent otherwise, so cells stored before the option existed still match
        settings["fusion_options"] = list(config.fusion_options)
    return settings


def fusion_trainer_config(config: BenchConfig, trainer: TrainerConfig) -> TrainerConfig:
    """``--fusion-options`` applied to a fusion method's trainer config (other methods are returned as they are)."""
    from genfusion_ns.runner import RunError, apply_overrides

    if not hasattr(trainer.pipeline, "video_model"):
        return trainer
    try:
        return apply_overrides(trainer, config.fusion_options)
    except RunError as error:
        raise BenchError(f"--fusion-options: {error}") from None


def run_cell(
    config: BenchConfig,
    root: Path,
    cell: Cell,
    protocol: Protocol,
    dataset: PreparedDataset,
    device: str,
    settings: dict[str, object],
) -> CellResult:
    """Train and evaluate one cell; failures become a 'failed' result (computed again by the next invocation)."""
    from genfusion_ns.runner import evaluate_run, train_in_process, trainer_config

    common = dict(
        scene=cell.scene,
        protocol=cell.protocol,
        method=cell.method,
        settings=settings,
        train_views=dataset.train_views,
        test_views=dataset.test_views,
        points_note=dataset.points_note,
    )
    run_folder, render_folder = cell.run_folder(root), cell.render_folder(root)
    try:
        trainer = trainer_config(
            cell.method,
            dataset.path,
            run_folder,
            cell.method,
            RUN_TIMESTAMP,
            device,
            config.max_steps,
            config.video_model,
            protocol.fusion_trajectory,
        )
        trainer = fusion_trainer_config(config, trainer)
        for stale in (trainer.get_base_dir(), render_folder):  # an interrupted earlier attempt of this cell
            if stale.exists():
                shutil.rmtree(stale)
        with PeakMemoryMeter(device) as meter:
            started = time.perf_counter()
            config_path = train_in_process(trainer)
            train_seconds = time.perf_counter() - started
        evaluation = evaluate_run(config_path, render_folder)
    except Exception as error:  # noqa: BLE001 -- one broken cell must not lose the others' hours of training
        CONSOLE.print(traceback.format_exc(), highlight=False, markup=False)
        return CellResult(**common, status="failed", error=f"{type(error).__name__}: {error}")
    metrics = evaluation.metrics
    return CellResult(
        **common,
        status="done",
        psnr=metrics.get("psnr"),
        ssim=metrics.get("ssim"),
        lpips=metrics.get("lpips"),
        train_seconds=train_seconds,
        repair_seconds=evaluation.repair_seconds,
        peak_memory_mib=meter.result.mib,
        peak_memory_kind=meter.result.kind,
        num_surfels=evaluation.num_surfels,
        config_path=str(config_path),
        render_folder=str(render_folder),
        extra={k: v for k, v in metrics.items() if k not in ("psnr", "ssim", "lpips")},
    )


def _is_report_folder(folder: Path) -> bool:
    """A report folder written by the bench before folders carried a marker."""
    return (folder / CELLS_FOLDER).is_dir() or (folder / "results.json").is_file()


def run_bench(config: BenchConfig, command: str | None = None) -> list[CellResult]:
    """Run (or resume) the grid and write the report; returns every cell's result in grid order."""
    config.validate()
    device = config.resolved_device()
    methods = config.resolved_methods()
    protocols = [parse_protocol(name) for name in dict.fromkeys(config.protocols)]
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    root = Path(config.output).expanduser().resolve()  # stored paths stay valid from any working directory
    if root.exists() and not root.is_dir():
        raise BenchError(f"--output {root} exists and is not a folder; choose another path.")
    # Resumable in a report folder of its own (its stale runs are replaced), never in a scene or a foreign folder.
    user_scenes = [Path(entry).expanduser() for entry in config.scenes if entry != GENERATE]
    prepare_output_folder(root, False, COMMAND, {"the scene": user_scenes, "--video-model": config.video_model},
                          error=BenchError, resumable=True, legacy=_is_report_folder)
    if config.fusion_options:  # a misspelt field fails now, not as every fusion cell's error hours later
        from genfusion_ns.runner import trainer_config

        for method in methods:
            fusion_trainer_config(config, trainer_config(method, root, root, method, RUN_TIMESTAMP, device))
    scenes = resolve_scenes(config, root / "scenes")
    cells = [
        (scene, protocol, Cell(scene.name, protocol.name, method))
        for scene in scenes
        for protocol in protocols
        for method in methods
    ]

    progress = Progress(
        TextColumn("[bold]genfusion-bench[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=CONSOLE,
    )
    task = progress.add_task("cells", total=len(cells))
    results: list[CellResult] = []
    datasets: dict[tuple, PreparedDataset] = {}
    for scene, protocol, cell in cells:
        settings = cell_settings(config, scene, cell, device)
        result = finished_result(root, cell, settings)
        if result is None:
            CONSOLE.rule(f"[bold]{cell.scene} | {cell.protocol} | {cell.method}")
            if (scene.name, protocol.name) not in datasets:
                datasets[(scene.name, protocol.name)] = prepare_dataset(
                    protocol, scene.path, root / "datasets" / scene.name, config.seed, config.depth_tolerance
                )
            result = run_cell(
                config, root, cell, protocol, datasets[(scene.name, protocol.name)], device, settings
            )
            write_result(root, result)
            state = f"PSNR {format_value('psnr', result.psnr)}" if result.status == "done" else "[red]failed"
        else:
            state = "already done (resumed)"
        results.append(result)
        progress.update(task, advance=1, description=f"{cell.key}: {state}")
        CONSOLE.print(progress)
    settings = {
        "device": device,
        "methods": list(methods),
        "protocols": [p.name for p in protocols],
        "scenes": [s.name for s in scenes],
        **{
            k: v
            for k, v in asdict(config).items()
            if k not in ("output", "methods", "protocols", "scenes", "device")
        },
    }
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}
    command = command or "genfusion-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    markdown = write_report(root, results, settings, command, config.render_views)
    failed = [r.cell.key for r in results if r.status != "done"]
    CONSOLE.print(
        f"Report: {markdown} (results.json, pictures/). "
        + (
            f"[red]{len(failed)} cell(s) failed[/]: {failed}; run the same command again to retry them."
            if failed
            else "All cells finished."
        )
    )
    return results


def entrypoint() -> None:
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # nerfstudio's torch.compile costs minutes on CPU
    config = tyro.cli(BenchConfig, description=BenchConfig.__doc__)
    try:
        results = run_bench(config)
    except BenchError as error:
        exit_with_error(COMMAND, error)
    sys.exit(0 if all(r.status == "done" for r in results) else 1)


if __name__ == "__main__":
    entrypoint()
