"""``GenFusionTrainer``: nerfstudio's ``Trainer`` with checkpoints that survive interruptions and resume exactly.

What it changes, and why:

* **Checkpoints are written then renamed** (a killed save never leaves a truncated ``step-*.ckpt``) and hold only
  plain types and tensors, so ``torch.load(path, weights_only=True)`` reads them without importing this package
  (nerfstudio's schedulers put numpy scalars in them).
* **Resume equals an uninterrupted run**: the checkpoint also stores the random generators (python, numpy, torch)
  and the datamanager's pending training-view order, and ``--max-num-iterations`` is the *total* step count, so a
  run resumed with ``--load-dir`` stops where the uninterrupted one would (nerfstudio would train that many more).
* **``--load-dir`` reads only ``step-*.ckpt`` files**, falls back to the previous checkpoint when the latest is
  unreadable, and says clearly when none is usable or when it belongs to another model.
* **Ctrl+C saves a checkpoint** after the current step (a repair round in progress is abandoned and redone on
  resume) and exits with status 130; a second Ctrl+C stops at once.
* **Bad input is a message, not a traceback**: a :class:`~genfusion_ns.errors.UserError` raised while setting up
  (dataset, video model, camera path, checkpoint) is printed and the command exits with status 2.
"""

from __future__ import annotations

import random
import re
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from genfusion_ns.errors import UserError, UserExit, print_error
from genfusion_ns.model.checkpoint import python_random_state
from genfusion_ns.outputs import replace_atomically

RESUME_KEY = "genfusion_resume"
"""Checkpoint entry with what nerfstudio does not save but an exact resume needs."""
CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
INTERRUPTED_EXIT_CODE = 130


class CheckpointError(UserError):
    """No usable checkpoint where ``--load-dir`` / ``--load-checkpoint`` points."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and tensors (``weights_only``-safe)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def random_states() -> Dict[str, Any]:
    """The global random generators nerfstudio seeds at start-up, as plain types."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: Dict[str, Any]) -> None:
    random.setstate(python_random_state(states["python"]))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def checkpoint_files(folder: Path) -> List[Path]:
    """``step-*.ckpt`` files of ``folder``, newest step first (other files are ignored)."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name)) and p.is_file()]
    return [path for _, path in sorted(found, reverse=True)]


def _checkpoints_to_try(load_dir: Optional[Path], load_step: Optional[int],
                        load_checkpoint: Optional[Path]) -> List[Path]:
    if load_dir is None:
        assert load_checkpoint is not None
        if not load_checkpoint.is_file():
            raise CheckpointError(f"--load-checkpoint {load_checkpoint} is not a file; point it at a step-*.ckpt "
                                  "file of a run (outputs/.../nerfstudio_models/).")
        return [load_checkpoint]
    if not load_dir.is_dir():
        raise CheckpointError(f"--load-dir {load_dir} is not a folder; point it at a run's nerfstudio_models/ "
                              "folder (outputs/<data>/<method>/<timestamp>/nerfstudio_models).")
    if load_step is not None:
        path = load_dir / f"step-{load_step:09d}.ckpt"
        if not path.is_file():
            raise CheckpointError(f"--load-step {load_step}: {path} does not exist; the folder holds "
                                  f"{[p.name for p in checkpoint_files(load_dir)] or 'no checkpoint'}.")
        return [path]
    files = checkpoint_files(load_dir)
    if not files:
        raise CheckpointError(f"--load-dir {load_dir} holds no step-*.ckpt checkpoint; point it at a run's "
                              "nerfstudio_models/ folder, or leave it out to train from scratch.")
    return files


def read_checkpoint(candidates: List[Path]) -> tuple[Path, Dict[str, Any]]:
    """The first readable checkpoint of ``candidates`` (newest first), warning about each unreadable one."""
    problems = []
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu")
        except Exception as error:  # truncated, not a torch file, unpickling refused: try the previous one
            problems.append(f"{path.name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            CONSOLE.print(f"[bold yellow]Checkpoint {path} is unreadable ({problems[-1]}); trying the previous one.")
            continue
        if not isinstance(state, dict) or not {"step", "pipeline"} <= set(state):
            problems.append(f"{path.name}: not a nerfstudio checkpoint (no 'step' / 'pipeline' entries)")
            CONSOLE.print(f"[bold yellow]{problems[-1]}; trying the previous one.")
            continue
        return path, state
    raise CheckpointError("no readable checkpoint: " + "; ".join(problems) + ". Resume from another run's "
                          "nerfstudio_models/ folder, or leave out --load-dir to train from scratch.")


def describe_mismatch(error: Exception, path: Path, method_name: str) -> CheckpointError:
    first = str(error).strip().splitlines()
    details = " ".join(line.strip() for line in first[:3])
    return CheckpointError(f"{path} does not fit the model of {method_name!r}: {details}. It was probably written by "
                           "another method or recipe (e.g. another SH degree); resume it with the method that wrote "
                           "it (see config.yml next to nerfstudio_models/).")


@dataclass
class GenFusionTrainerConfig(TrainerConfig):
    """nerfstudio's ``TrainerConfig`` with the GenFusion trainer (same options)."""

    _target: Type = field(default_factory=lambda: GenFusionTrainer)


class GenFusionTrainer(Trainer):
    config: GenFusionTrainerConfig

    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        self._last_completed_step: Optional[int] = None
        self._interrupted = False
        self._resume_state: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------ set-up
    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        try:
            super().setup(test_mode=test_mode)
        except UserError as error:
            print_error("ns-train", error)
            raise UserExit(str(error)) from None
        if self._resume_state is not None:  # last: set-up itself draws from the generators
            restore_random_states(self._resume_state["random"])
            datamanager = self.pipeline.datamanager
            unseen = self._resume_state.get("train_unseen_cameras")
            if unseen is not None and hasattr(datamanager, "train_unseen_cameras"):
                datamanager.train_unseen_cameras = [int(i) for i in unseen]
            sampling = self._resume_state.get("train_sampling_rng")
            if sampling is not None and hasattr(datamanager, "random_generator"):
                datamanager.random_generator.setstate(python_random_state(sampling))

    def _load_checkpoint(self) -> None:
        config = self.config
        if config.load_dir is None and config.load_checkpoint is None:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        path, state = read_checkpoint(_checkpoints_to_try(config.load_dir, config.load_step, config.load_checkpoint))
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
        except (RuntimeError, KeyError) as error:
            raise describe_mismatch(error, path, config.method_name) from None
        self._start_step = state["step"] + 1
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        self._resume_state = state.get(RESUME_KEY)
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path} (step {state['step']}).")

    # ------------------------------------------------------------------ checkpoints
    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            RESUME_KEY: {
                "random": random_states(),
                "train_unseen_cameras": list(getattr(self.pipeline.datamanager, "train_unseen_cameras", []) or []),
                "train_sampling_rng": (self.pipeline.datamanager.random_generator.getstate()
                                       if hasattr(self.pipeline.datamanager, "random_generator") else None),
            },
        }
        replace_atomically(path, lambda temporary: torch.save(plain(state), temporary))
        if self.config.save_only_latest_checkpoint:
            for other in self.checkpoint_dir.glob("*.ckpt"):
                if other != path:
                    other.unlink()

    # ------------------------------------------------------------------ training
    def train_iteration(self, step: int):
        result = super().train_iteration(step)
        self._last_completed_step = step
        return result

    def train(self) -> None:
        total = self.config.max_num_iterations
        remaining = total - self._start_step
        if remaining <= 0:
            CONSOLE.print(f"[bold yellow]The checkpoint is at step {self._start_step - 1}, already at "
                          f"--max-num-iterations {total}: nothing to train. Raise --max-num-iterations to train on.")
            return
        previous = self._install_interrupt_handler()
        self.config.max_num_iterations = remaining  # nerfstudio's loop counts from the start step
        try:
            super().train()
        except KeyboardInterrupt:
            if not getattr(self.pipeline, "round_interrupted", False):
                raise
            self._interrupted = True
            self._save_after_interrupt()
        finally:
            self.config.max_num_iterations = total
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if self._interrupted:
            raise UserExit("interrupted", code=INTERRUPTED_EXIT_CODE)

    def _after_train(self) -> None:
        if self._interrupted:
            self._save_after_interrupt()
            return
        self.training_state = "completed"
        if self._last_completed_step is not None:  # nerfstudio saves self.step, which a stop may not have run
            self.save_checkpoint(self._last_completed_step)
        writer.write_out_storage()

    def _save_after_interrupt(self) -> None:
        step = self._last_completed_step
        if step is None:
            CONSOLE.print("[bold yellow]Interrupted before the first step: no checkpoint written.")
            return
        self.save_checkpoint(step)
        writer.write_out_storage()
        CONSOLE.print(f"[bold yellow]Interrupted: checkpoint of step {step} saved in {self.checkpoint_dir}. Resume "
                      f"with the same command plus --load-dir {self.checkpoint_dir}.", highlight=False,
                      soft_wrap=True)

    def _install_interrupt_handler(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_interrupt(signum: int, frame: Any) -> None:
            if self._interrupted:
                raise KeyboardInterrupt  # a second Ctrl+C: stop now
            self._interrupted = True
            self.stop_training = True
            CONSOLE.print("[bold yellow]Ctrl+C: saving a checkpoint after this step (press again to stop at once).")
            if getattr(self.pipeline, "in_repair_round", False):
                raise KeyboardInterrupt  # a round takes minutes: abandon it, the resumed run redoes it

        return signal.signal(signal.SIGINT, on_interrupt)
