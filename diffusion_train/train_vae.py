"""``genfusion-train-vae``: train the pipeline's 4-channel RGB-D autoencoder on genfusion-make-data frames.

The authors reuse a pre-trained VAE (LDM3D-4c) and keep it frozen. A model trained from scratch (the shipped
``small`` default) has no such VAE, so this stage trains one first: every frame of the training clips, artifact and
target alike, in the pipeline's own RGB-D code (RGB and disparity code in [-1, 1]), reconstructed with an L1 loss plus
a small KL term. Afterwards it measures the latent spread over the data and stores ``latent_scale_factor = 1/std`` in
the pipeline config (what the 0.18215 of Stable Diffusion's VAE is), so the diffusion stage sees unit-variance
latents. The output ``pipeline/`` folder is the ``--init`` of ``genfusion-train-video``::

    genfusion-train-vae --data data/clips --output runs/vae --init random:small
    genfusion-train-video --data data/clips --output runs/video --init runs/vae/pipeline

``--parts decoder`` fine-tunes only the decoder of a trained pipeline (Stable Diffusion's ft-MSE decoder did the
same): the encoder, and with it the latent space the UNet was trained in, stays exactly as it was, so the result
loads with the same UNet and needs no new diffusion training::

    genfusion-train-vae --data data/clips --output runs/decoder --init genfusion_ns/video/default_model --parts decoder
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffusion_train.train import (
    CONSOLE,
    PIPELINE_DIR,
    RANDOM_PREFIX,
    TrainVideoError,
    load_initial_pipeline,
    prepare_output,
    run_command,
)
from genfusion_ns.video.preprocess import rgbd_frames

COMMAND = "genfusion-train-vae"


@dataclass
class TrainVaeConfig:
    """Train the RGB-D VAE of a GenFusion video pipeline on clips written by genfusion-make-data."""

    data: tuple[Path, ...]
    """Data folders written by genfusion-make-data."""
    output: Path
    """Run folder (new or empty, or an earlier run of this command with --overwrite; never holding, or inside,
    --data or --init)."""
    init: str = "random:small"
    """Pipeline whose VAE is trained: a folder, a cached hub id, or "random:<config name>"."""
    parts: Literal["all", "decoder"] = "all"
    """What is trained. 'all': encoder and decoder, then ``latent_scale_factor`` is measured anew (a new latent
    space: the UNet must be trained after it). 'decoder': the decoder (and its post-quantisation conv) only; the
    encoder and ``latent_scale_factor`` stay as they are, so a trained UNet keeps working with the result."""
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 2
    """Clips drawn per step; their frames (artifact and target) form the pool the step's samples come from."""
    frames_per_step: int = 8
    """Frames per optimisation step, drawn at random from the pool."""
    crop_size: int | None = 48
    """Train on random square crops of this side (the VAE is convolutional; crops make a step several times
    cheaper on CPU). None: whole frames."""
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    """Weight of the KL term (Stable Diffusion's KL-f8 VAE used 1e-6)."""
    depth_weight: float = 1.0
    """Weight of the depth channel's L1 relative to each colour channel."""
    max_grad_norm: float = 1.0
    scale_batches: int = 16
    """Batches used to measure the latent standard deviation for ``latent_scale_factor``."""
    log_every: int = 50
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Precision of the weights in the final pipeline/ folder (float16 halves its size; loaders upcast on CPU)."""
    overwrite: bool = False
    """Delete an earlier genfusion-train-vae run in --output first (never a folder this command did not write)."""


def frames_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A :class:`~diffusion_train.dataset.ClipDataset` batch -> all its RGB-D frames ``[N, 4, H, W]`` in
    [-1, 1], packed as the pipeline's VAE sees them (artifact frames first)."""
    kinds = ("artifact", "target")
    return torch.cat([rgbd_frames(batch[f"{kind}_rgb"], batch[f"{kind}_depth"]) for kind in kinds])


def random_crops(frames: torch.Tensor, count: int, size: int | None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """``count`` frames of ``frames`` ``[N, 4, H, W]`` at random, each cropped to a random ``size`` x ``size``."""
    picks = torch.randperm(frames.shape[0], generator=generator)[:count]
    height, width = frames.shape[-2:]
    if size is None or size >= min(height, width):
        return frames[picks]
    crops = []
    for index in picks.tolist():
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        crops.append(frames[index, :, top:top + size, left:left + size])
    return torch.stack(crops)


def trainable_parameters(vae, parts: str) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for ``--parts`` and return the parameters to optimise."""
    vae.requires_grad_(parts == "all")
    if parts == "decoder":
        for module in (vae.decoder, vae.post_quant_conv):
            if module is not None:
                module.requires_grad_(True)
    return [p for p in vae.parameters() if p.requires_grad]


def reconstruction_loss(vae, frames: torch.Tensor, kl_weight: float, depth_weight: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total loss, L1)`` of one autoencoding pass through a posterior sample. With a frozen encoder the KL term
    is left out (it has no trainable parameter behind it)."""
    encoder_trains = any(p.requires_grad for p in vae.encoder.parameters())
    with torch.set_grad_enabled(encoder_trains and torch.is_grad_enabled()):
        posterior = vae.encode(frames).latent_dist
        latents = posterior.sample()
    decoded = vae.decode(latents).sample
    weights = frames.new_tensor([1.0, 1.0, 1.0, depth_weight]).view(1, 4, 1, 1)
    l1 = ((decoded - frames).abs() * weights).sum(dim=1).mean() / weights.sum()
    if not encoder_trains:
        return l1, l1
    kl = posterior.kl().mean() / frames[0].numel()
    return l1 + kl_weight * kl, l1


@torch.no_grad()
def latent_std(vae, loader, batches: int) -> float:
    """Standard deviation of posterior samples over up to ``batches`` batches (what 1/scale_factor should be)."""
    values = []
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        values.append(vae.encode(frames_of(batch).to(vae.device)).latent_dist.sample().flatten().float().cpu())
    return float(torch.cat(values).std())


def train_vae(config: TrainVaeConfig) -> Path:
    """Run VAE training; returns the saved pipeline folder (VAE trained, ``latent_scale_factor`` set)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from diffusion_train.dataset import ClipDataset

    if config.max_steps < 1 or config.batch_size < 1 or config.frames_per_step < 1:
        raise TrainVideoError("--max-steps, --batch-size and --frames-per-step must be >= 1")
    if config.crop_size is not None and config.crop_size % 8 != 0:
        raise TrainVideoError(f"--crop-size must be a multiple of 8 (the VAE downsamples), got {config.crop_size}")
    if config.parts == "decoder" and config.init.startswith(RANDOM_PREFIX):
        raise TrainVideoError("--parts decoder fine-tunes a trained VAE: give --init a trained pipeline folder "
                              "(e.g. genfusion_ns/video/default_model), or use --parts all with random weights")
    accelerator = Accelerator()
    prepare_output(SimpleNamespace(output=config.output, resume=False, overwrite=config.overwrite, data=config.data,
                                   init=config.init), accelerator.is_main_process, COMMAND)
    set_seed(config.seed)
    try:
        pipe = load_initial_pipeline(config.init, config.seed)
    except (OSError, KeyError, ValueError) as error:
        raise TrainVideoError(f"--init {config.init!r} cannot be loaded: {error}") from error
    vae = pipe.vae.train()
    parameters = trainable_parameters(vae, config.parts)
    settings = pipe.config
    dataset = ClipDataset(config.data, settings.num_frames, settings.height, settings.width)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(dataset) >= config.batch_size)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_steps,
                                                          eta_min=config.learning_rate * 0.05)
    vae, optimizer, loader = accelerator.prepare(vae, optimizer, loader)
    if accelerator.is_main_process:
        config.output.mkdir(parents=True, exist_ok=True)
        record = {k: ([str(p) for p in v] if k == "data" else str(v) if isinstance(v, Path) else v)
                  for k, v in asdict(config).items()}
        (config.output / "train_vae_config.json").write_text(json.dumps(record, indent=2))

    step, history = 0, []
    columns = (TextColumn("[bold]vae"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("L1 {task.fields[l1]:.4f}"))
    with Progress(*columns, console=CONSOLE, disable=not accelerator.is_local_main_process) as progress:
        task = progress.add_task("vae", total=config.max_steps, l1=float("nan"))
        while step < config.max_steps:
            for batch in loader:
                samples = random_crops(frames_of(batch), config.frames_per_step, config.crop_size)
                loss, l1 = reconstruction_loss(accelerator.unwrap_model(vae), samples, config.kl_weight,
                                               config.depth_weight)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update(task, advance=1, l1=float(l1.detach()))
                if step % config.log_every == 0 or step == config.max_steps:
                    history.append({"step": step, "l1": float(l1.detach()), "loss": float(loss.detach())})
                    if not CONSOLE.is_terminal:
                        accelerator.print(f"step {step}: L1 {float(l1.detach()):.4f}", flush=True)
                if step >= config.max_steps:
                    break

    pipeline_dir = config.output / PIPELINE_DIR
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(vae).eval().requires_grad_(False)
        std = latent_std(trained, loader, config.scale_batches)
        pipe.vae = trained
        if config.parts == "all":  # a new latent space; with a frozen encoder the UNet's scale stays
            pipe.register_to_config(latent_scale_factor=1.0 / max(std, 1e-6))
        pipe.to(dtype=getattr(torch, config.save_dtype)).save_pretrained(str(pipeline_dir), safe_serialization=True)
        (config.output / "train_vae_log.json").write_text(json.dumps(
            {"history": history, "parts": config.parts, "latent_std": std,
             "latent_scale_factor": float(pipe.config.latent_scale_factor)}, indent=2))
    accelerator.print(f"Saved the pipeline with the trained VAE to {pipeline_dir}")
    return pipeline_dir


def entrypoint() -> None:
    run_command(COMMAND, TrainVaeConfig, train_vae)


if __name__ == "__main__":
    entrypoint()
