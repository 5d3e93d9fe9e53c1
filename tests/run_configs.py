"""One way for the tests to turn a registered method into a short, quiet CPU run of nerfstudio's trainer."""

from __future__ import annotations

import copy
from pathlib import Path

from nerfstudio.engine.trainer import TrainerConfig


def short_cpu_run(template: TrainerConfig, data: Path, output_dir: Path, steps: int) -> TrainerConfig:
    """A copy of ``template`` training ``steps`` steps on ``data`` on the CPU: no viewer, no evaluation, no
    checkpoint before the end. The caller changes what its test needs, then calls ``finish``."""
    config = copy.deepcopy(template)
    config.pipeline.datamanager.data = data
    config.output_dir = output_dir
    config.max_num_iterations = steps
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.steps_per_eval_image = config.steps_per_eval_all_images = config.steps_per_save = 10**6
    return config


def finish(config: TrainerConfig) -> TrainerConfig:
    """Timestamp the run and write its config.yml, as ns-train does before training."""
    config.set_timestamp()
    config.save_config()
    return config
