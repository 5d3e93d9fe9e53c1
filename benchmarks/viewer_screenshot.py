"""Screenshot of nerfstudio's web viewer with GenFusion's repaired views, in a real headless browser.

Checks by eye and by pixel count that the repaired-view frustums can be made out at the viewer's start camera
and that the "Show repaired views" checkbox hides them. End to end:

1. without ``--load-config``: generate a small scene and train ``genfusion-lite`` on it briefly (repair rounds
   included; ``--video-model random-tiny`` by default: the frustums, not the repairs, are under test);
2. start nerfstudio's viewer on the run as ``ns-viewer`` does (``eval_setup``, ``Viewer``, ``init_scene``)
   and draw the last round's repaired views with ``genfusion_ns.fusion.viewer.show_repaired_views``, as the
   pipeline does during ``ns-train``;
3. take a screenshot with headless Chromium (WebGL through SwiftShader), then untick the checkbox and take
   another.

Writes ``repaired_shown.png``, ``repaired_hidden.png`` and ``viewer_screenshot.json`` (the frustum size and
the share of frustum-coloured pixels in each shot) into ``--out``. Needs a Chromium binary (Debian:
``apt-get install -y chromium``)::

    python benchmarks/viewer_screenshot.py --out viewer_shot
    python benchmarks/viewer_screenshot.py --out shot --load-config outputs/room/genfusion-lite/TS/config.yml
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")


@dataclass
class ScreenshotConfig:
    """Screenshot nerfstudio's viewer with a genfusion-lite run's repaired views."""

    out: Path = Path("viewer_shot")
    """Output folder (the trained run too, when no --load-config is given)."""
    load_config: Optional[Path] = None
    """An existing fusion run's config.yml (with at least one repair round); trains a small one otherwise."""
    video_model: str = "random-tiny"
    """Video model of the small run trained without --load-config."""
    max_steps: int = 40
    resolution: int = 64
    port: int = 7391
    window: tuple[int, int] = (1280, 800)
    """Browser window width and height in pixels."""
    wait_ms: int = 20000
    """Chromium's virtual-time budget: how long the page may load and render before the shot."""
    browser: str = "chromium"
    """Chromium executable (name on PATH or a path)."""


def _train(config: ScreenshotConfig) -> Path:
    from genfusion_ns.runner import train_in_process, trainer_config
    from genfusion_ns.scenes import generate_scene

    scene = generate_scene(config.out / "scene", seed=4242, views=16, train_views=3,
                           resolution=config.resolution, overwrite=True)
    trainer = trainer_config("genfusion-lite", scene.out, config.out / "runs", experiment_name="viewer",
                             timestamp="shot", device="cpu", max_steps=config.max_steps,
                             video_model=config.video_model)
    return train_in_process(trainer)


def frustum_pixel_share(path: Path, color: tuple[int, int, int], tolerance: int = 60) -> float:
    """Share of the screenshot's pixels within ``tolerance`` (per channel) of the frustum colour."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    close = np.abs(pixels - np.asarray(color, dtype=np.int16)).max(axis=-1) <= tolerance
    return float(close.mean())


def _viewport_loaded(path: Path) -> bool:
    """Whether the shot shows the model's render (the 3D viewport, left of the panel, is not one flat colour):
    the page loads over a websocket, which the browser's virtual time does not wait for."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    height, width = pixels.shape
    return float(pixels[height // 10 : -height // 10, : width // 2].std()) > 4.0


def _screenshot(config: ScreenshotConfig, path: Path, attempts: int = 3) -> None:
    """A shot of the viewer at its start camera, retaken (up to ``attempts`` times) until the render is in."""
    for _ in range(attempts):
        _browser_screenshot(config, path)
        if _viewport_loaded(path):
            return
    print(f"warning: {path} may show the page before the model's render arrived")


def _browser_screenshot(config: ScreenshotConfig, path: Path) -> None:
    browser = shutil.which(config.browser)
    if browser is None:
        raise SystemExit(f"no {config.browser!r} on PATH; install Chromium (Debian: apt install chromium)")
    width, height = config.window
    command = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--hide-scrollbars",
        "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
        f"--window-size={width},{height}", f"--virtual-time-budget={config.wait_ms}",
        f"--screenshot={path.resolve()}", f"http://localhost:{config.port}",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=max(120, 4 * config.wait_ms // 1000))


def _frustum_scale(viewer, views) -> float:
    """The size show_repaired_views gave the frustums (viewer units), recomputed from the same cameras."""
    from genfusion_ns.fusion import viewer as fusion_viewer

    repaired = [fusion_viewer._viser_pose(pose)[1] for pose in views.camera_to_worlds.numpy()]
    positions = np.concatenate([fusion_viewer._drawn_camera_positions(viewer), np.stack(repaired)])
    return fusion_viewer.frustum_scale(positions, float(viewer.config.camera_frustum_scale))


def main(config: ScreenshotConfig) -> dict:
    from nerfstudio.utils.eval_utils import eval_setup
    from nerfstudio.viewer.viewer import Viewer

    from genfusion_ns.fusion import viewer as fusion_viewer
    from genfusion_ns.fusion.pipeline import REPAIRED_FOLDER
    from genfusion_ns.fusion.views import MANIFEST_NAME, RepairedViews

    config.out.mkdir(parents=True, exist_ok=True)
    config_path = config.load_config or _train(config)
    rounds = sorted((config_path.parent / REPAIRED_FOLDER).glob(f"*/{MANIFEST_NAME}"))
    if not rounds:
        raise SystemExit(f"{config_path.parent} has no repair rounds ({REPAIRED_FOLDER}/*); train longer")
    run, pipeline, _, step = eval_setup(config_path, test_mode="test")
    run.viewer.websocket_port = config.port
    viewer = Viewer(run.viewer, log_filename=run.get_base_dir() / run.viewer.relative_log_filename,
                    datapath=pipeline.datamanager.get_datapath(), pipeline=pipeline, train_lock=None)
    viewer.init_scene(train_dataset=pipeline.datamanager.train_dataset, train_state="completed",
                      eval_dataset=pipeline.datamanager.eval_dataset)
    viewer.update_scene(step=step)
    views = RepairedViews.load(rounds[-1].parent)
    handles = fusion_viewer.show_repaired_views(viewer, views)
    node, checkbox = viewer._genfusion_repaired_toggle
    shots = {"shown": config.out / "repaired_shown.png", "hidden": config.out / "repaired_hidden.png"}
    _screenshot(config, shots["shown"])
    checkbox.value = False  # as a click on the checkbox does: the callback hides the parent node
    time.sleep(1.0)
    _screenshot(config, shots["hidden"])
    result = {
        "config": str(config_path), "round": rounds[-1].parent.name, "frustums": len(handles),
        "frustum_scale": _frustum_scale(viewer, views),
        "nerfstudio_frustum_scale": float(run.viewer.camera_frustum_scale),
        "checkbox_hides_node": node.visible is False,
        "frustum_pixel_share": {k: frustum_pixel_share(p, fusion_viewer.FRUSTUM_COLOR)
                                for k, p in shots.items()},
    }
    (config.out / "viewer_screenshot.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    viewer.viser_server.stop()
    return result


if __name__ == "__main__":
    main(tyro.cli(ScreenshotConfig, description=ScreenshotConfig.__doc__))
    sys.exit(0)
