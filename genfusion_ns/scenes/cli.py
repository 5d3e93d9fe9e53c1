"""``genfusion-scene``: the command-line front end of :func:`generate_scene`."""

from __future__ import annotations

import sys
import time

import tyro
from rich.console import Console

from genfusion_ns.outputs import exit_with_error

from .config import COMMAND, SceneConfig, SceneConfigError
from .generate import generate_scene


def main(config: SceneConfig) -> int:
    """Generate the scene and print where it went; a bad option exits with status 2 and one line on stderr."""
    console = Console(stderr=True)
    start = time.perf_counter()
    try:
        summary = generate_scene(config=config)
    except SceneConfigError as error:
        exit_with_error(COMMAND, error)
    console.print(
        f"Wrote {config.views} views ({len(summary.train_indices)} train, {len(summary.test_indices)} held out) and "
        f"{summary.num_points} seed points to {summary.out} in {time.perf_counter() - start:.1f} s. "
        f"Train with: ns-train genfusion-2dgs-lite --data {summary.out}", highlight=False, soft_wrap=True)
    return 0


def entrypoint() -> None:
    sys.exit(main(tyro.cli(SceneConfig, description=SceneConfig.__doc__)))


if __name__ == "__main__":
    entrypoint()
