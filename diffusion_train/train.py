"""``genfusion-train-video``: fine-tune (or train from scratch) the GenFusion RGB-D video model with accelerate.

Follows the authors' recipe (reference notes §2.3-2.4): v-prediction MSE, 10% reference dropout, UNet + resampler
trainable, VAE and CLIP frozen, AdamW lr 1e-5 (torch defaults otherwise), gradient accumulation 2, gradient clipping
at norm 0.5, mixed precision. Runs single-process, or multi-GPU / multi-node under ``accelerate launch``.

Output folder::

    train_config.json           the settings of this run
    checkpoints/checkpoint-N/   accelerate ``save_state`` (weights, optimizer, RNG) for ``--resume``
    pipeline/                   the final ``GenFusionVideoPipeline`` (``save_pretrained``; loads with
                                ``ns-train genfusion --pipeline.video-model <output>/pipeline``)
    samples/step-N.png          repaired-clip grids (also logged to tensorboard under logs/)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from genfusion_ns.outputs import exit_with_error, prepare_output_folder

CONSOLE = Console()
COMMAND = "genfusion-train-video"
RANDOM_PREFIX = "random:"
CHECKPOINTS_DIR = "checkpoints"
PIPELINE_DIR = "pipeline"
ConfigT = TypeVar("ConfigT")


class TrainVideoError(ValueError):
    """An option or the output folder cannot be used; the message says what to change."""


@dataclass
class TrainVideoConfig:
    """Train the GenFusion RGB-D video diffusion model on clips written by genfusion-make-data."""

    data: tuple[Path, ...]
    """Data folders written by genfusion-make-data."""
    output: Path
    """Run folder (new or empty; an earlier run of this command with --resume or --overwrite; never holding, or
    inside, --data or --init)."""
    init: str = "random:tiny"
    """Initial model: a GenFusionVideoPipeline folder (e.g. a genfusion-convert output or an earlier run's
    pipeline/) or cached hub id, or "random:<config name>" ("random:tiny", "random:full") for random weights."""
    seed: int = 0
    max_steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 1
    """Clips per device per forward pass."""
    gradient_accumulation_steps: int = 2
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 0.5
    reference_dropout: float = 0.1
    """Probability of replacing the reference by the grey image (the CFG unconditional branch)."""
    train_image_proj: bool = True
    """Train the resampler too (the authors do); otherwise only the UNet."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    window_stride: int = 1
    """Stride between clip start frames within a scene."""
    target_depth_range: Literal["artifact", "own"] = "artifact"
    """Disparity range normalising the target depth (see diffusion_train/dataset.py)."""
    cache_latents: bool = True
    """Compute each window's VAE posterior once and keep it in host memory (the VAE is frozen; ~1 MB per window
    for the small model). Turn off for datasets too large for memory."""
    num_workers: int = 0
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 3
    """Keep at most this many checkpoints (oldest removed first); None keeps all."""
    sample_every: int = 500
    """Log a repaired sample clip every N steps (0: only at the end)."""
    sample_steps: int = 50
    sample_guidance_scale: float = 2.5
    """The authors' training-log sampler: 50 "uniform_trailing" DDIM steps, CFG 2.5."""
    log_every: int = 10
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Precision of the weights in the final pipeline/ folder (float16 halves its size; loaders upcast on CPU)."""
    resume: bool = False
    """Continue from the latest checkpoint in output/checkpoints."""
    overwrite: bool = False
    """Delete an earlier genfusion-train-video run in --output first (never a folder this command did not write)."""


def _jsonable(config: TrainVideoConfig) -> dict:
    return {k: ([str(p) for p in v] if k == "data" else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()}


def latest_checkpoint(output: Path) -> Path | None:
    folders = [p for p in (output / CHECKPOINTS_DIR).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(folders, key=lambda p: int(p.name.split("-")[-1])) if folders else None


def prepare_output(config: TrainVideoConfig, is_main: bool, command: str = COMMAND) -> Path | None:
    """Apply the output-folder policy of :mod:`genfusion_ns.outputs`; returns the checkpoint to resume from (if any).

    ``--resume`` continues the run in place, as before. Otherwise the folder must be new, empty or (with
    ``--overwrite``) an earlier run of ``command``, and never hold, be or lie inside ``--data`` / ``--init``: a run
    started from ``runs/v/pipeline`` must not delete it. Only the main process checks, clears and marks the
    folder (the others would race with it); its error ends the whole launch.
    """
    output = config.output
    if output.exists() and not output.is_dir():
        raise TrainVideoError(f"--output {output} exists and is not a folder")
    if config.resume and config.overwrite:
        raise TrainVideoError("--resume and --overwrite exclude each other")
    if config.resume:
        checkpoint = latest_checkpoint(output)
        if checkpoint is None:
            raise TrainVideoError(f"--resume: no checkpoint-N folder in {output / CHECKPOINTS_DIR}")
        return checkpoint
    init = None if config.init.startswith(RANDOM_PREFIX) else config.init
    inputs = {"--data": config.data, "--init": init}
    if is_main:
        prepare_output_folder(output, config.overwrite, command, inputs, error=TrainVideoError,
                              resume_flag="--resume" if command == COMMAND else None)
    return None


def load_initial_pipeline(init: str, seed: int):
    from genfusion_ns.video import GenFusionVideoPipeline

    if init.startswith(RANDOM_PREFIX):
        return GenFusionVideoPipeline.from_config_name(init[len(RANDOM_PREFIX):], seed=seed)
    return GenFusionVideoPipeline.from_pretrained(init, torch_dtype=torch.float32)


def prune_checkpoints(output: Path, keep: int | None) -> None:
    if keep is None:
        return
    folders = sorted((output / CHECKPOINTS_DIR).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for old in folders[:-keep] if keep > 0 else folders:
        shutil.rmtree(old)


def train(config: TrainVideoConfig) -> Path:
    """Run training; returns the saved pipeline folder."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader

    from diffusion_train.dataset import ClipDataset
    from diffusion_train.memory import enable_block_checkpointing
    from diffusion_train.objective import PosteriorCache, VideoDenoiser, VPredictionObjective, encode_batch
    from diffusion_train.samples import log_sample

    if config.max_steps < 1 or config.batch_size < 1 or config.gradient_accumulation_steps < 1:
        raise TrainVideoError("--max-steps, --batch-size and --gradient-accumulation-steps must be >= 1")
    if not 0.0 <= config.reference_dropout <= 1.0:
        raise TrainVideoError(f"--reference-dropout must be in [0, 1], got {config.reference_dropout}")
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(config.output), logging_dir=str(config.output / "logs")),
    )
    resume_from = prepare_output(config, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    set_seed(config.seed)

    try:
        pipe = load_initial_pipeline(config.init, config.seed)
    except (OSError, KeyError, ValueError) as error:
        raise TrainVideoError(f"--init {config.init!r} cannot be loaded: {error}") from error
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.requires_grad_(False).eval()
    pipe.image_encoder.requires_grad_(False).eval()
    pipe.image_proj.requires_grad_(config.train_image_proj)
    if config.gradient_checkpointing:
        enable_block_checkpointing(pipe.unet)
    pipe.to(accelerator.device)
    denoiser = VideoDenoiser(pipe.unet, pipe.image_proj, int(pipe.config.fps)).train()

    settings = pipe.config
    dataset = ClipDataset(config.data, settings.num_frames, settings.height, settings.width, config.window_stride,
                          config.target_depth_range)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers,
                        drop_last=len(dataset) >= config.batch_size)
    parameters = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    denoiser, optimizer, loader = accelerator.prepare(denoiser, optimizer, loader)
    objective = VPredictionObjective(pipe)
    cache = PosteriorCache() if config.cache_latents else None

    global_step = 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        global_step = int(resume_from.name.split("-")[-1])
        accelerator.print(f"Resumed from {resume_from} at step {global_step}")
    if accelerator.is_main_process:
        config.output.mkdir(parents=True, exist_ok=True)
        (config.output / "train_config.json").write_text(json.dumps(_jsonable(config), indent=2))
        accelerator.init_trackers("genfusion-train-video", config={k: str(v) for k, v in _jsonable(config).items()})

    updates_per_epoch = max(1, math.ceil(len(loader) / config.gradient_accumulation_steps))
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns, console=CONSOLE, disable=not accelerator.is_local_main_process) as progress:
        task = progress.add_task("train", total=config.max_steps, completed=global_step, loss=float("nan"))
        running = 0.0
        while global_step < config.max_steps:
            epoch, done_in_epoch = divmod(global_step, updates_per_epoch)
            epoch_loader = loader
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            if done_in_epoch:  # resumed mid-epoch: skip the batches already trained on
                epoch_loader = accelerator.skip_first_batches(loader, done_in_epoch * config.gradient_accumulation_steps)
            for batch in epoch_loader:
                with accelerator.accumulate(denoiser):
                    with accelerator.autocast():
                        encoded = encode_batch(pipe, batch, config.reference_dropout, cache=cache)
                    noise = torch.randn_like(encoded.target)
                    timesteps = objective.sample_timesteps(noise.shape[0], noise.device)
                    loss = objective.loss(denoiser, encoded, noise, timesteps)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                running += accelerator.gather(loss.detach()[None]).mean().item() / config.gradient_accumulation_steps
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                progress.update(task, advance=1, loss=running)
                if global_step % config.log_every == 0 or global_step == config.max_steps:
                    accelerator.log({"train/loss": running, "train/lr": optimizer.param_groups[0]["lr"]},
                                    step=global_step)
                    if not CONSOLE.is_terminal:  # logs redirected to a file: a plain line instead of the bar
                        accelerator.print(f"step {global_step}: loss {running:.4f}", flush=True)
                running = 0.0
                if global_step % config.checkpoint_every == 0 or global_step == config.max_steps:
                    save_checkpoint(accelerator, config, global_step)
                if accelerator.is_main_process and config.sample_every > 0 and global_step % config.sample_every == 0:
                    log_sample(accelerator, pipe, dataset, config, global_step)
                if global_step >= config.max_steps:
                    break

    accelerator.wait_for_everyone()
    pipeline_dir = config.output / PIPELINE_DIR
    if accelerator.is_main_process:
        if config.sample_every == 0 or config.max_steps % config.sample_every != 0:
            log_sample(accelerator, pipe, dataset, config, global_step)
        pipe.to(dtype=getattr(torch, config.save_dtype)).save_pretrained(str(pipeline_dir), safe_serialization=True)
        pipe.to(dtype=torch.float32)
    accelerator.print(f"Saved the trained pipeline to {pipeline_dir}")
    accelerator.end_training()
    return pipeline_dir


def save_checkpoint(accelerator, config: TrainVideoConfig, step: int) -> None:
    """accelerate ``save_state`` into checkpoints/checkpoint-<step> (all processes take part), then prune."""
    folder = config.output / CHECKPOINTS_DIR / f"checkpoint-{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        prune_checkpoints(config.output, config.checkpoints_total_limit)


def run_command(command: str, config_type: type[ConfigT], run: Callable[[ConfigT], object]) -> None:
    """The command-line shell of genfusion-train-video and genfusion-train-vae: parse the options, run, and print
    bad options or data as one message instead of a traceback."""
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    config = tyro.cli(config_type, description=config_type.__doc__)
    from diffusion_train.clips import ClipDataError

    try:
        run(config)
    except (TrainVideoError, ClipDataError) as error:
        exit_with_error(command, error)


def entrypoint() -> None:
    run_command(COMMAND, TrainVideoConfig, train)


if __name__ == "__main__":
    entrypoint()
