"""Pictures that say what they show: the held-out comparison and the repaired clip (matplotlib and its font).

The comparison's tiles are nerfstudio's own evaluation images (``eval_img_XXXX.png``: ground truth | render
side by side, written by ``get_average_eval_image_metrics``), so the picture shows exactly what was scored.
``XXXX`` is the position in the evaluation dataset, not a frame of the dataset: :func:`eval_frame_names` maps
it back to the image file names, which label the rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

EVAL_IMAGE_GLOB = "eval_img_*.png"
_EVAL_INDEX = re.compile(r"eval_img_(\d+)\.png$")
ROLES = {"genfusion-2dgs": "baseline", "genfusion-2dgs-lite": "baseline", "genfusion": "GenFusion",
         "genfusion-lite": "GenFusion"}
"""What a method is in a comparison: the diffusion-free reconstruction or the full method."""


def method_title(method: str) -> str:
    """Column title: the method's role (``baseline`` / ``GenFusion``) above its nerfstudio name."""
    role = ROLES.get(method)
    return f"{role}\n{method}" if role else method


def eval_frame_names(config_path: Path) -> list[str] | None:
    """Image file names of a run's held-out views in ``ns-eval`` order (``eval_img_XXXX`` is entry ``XXXX``).

    Reads the run's ``config.yml`` and asks its dataparser for the test split, as ``eval_setup`` does; None
    when the config or the dataset cannot be read (the rows then fall back to evaluation indices).
    """
    import yaml

    try:
        config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
        datamanager = config.pipeline.datamanager
        if getattr(datamanager, "data", None) is not None:
            datamanager.dataparser.data = Path(datamanager.data)
        outputs = datamanager.dataparser.setup().get_dataparser_outputs(split="test")
    except Exception:  # noqa: BLE001 - labels are a convenience; the picture is still written
        return None
    return [Path(name).name for name in outputs.image_filenames]


def _row_label(eval_name: str, frame_names: Sequence[str] | None) -> str:
    index = int(_EVAL_INDEX.search(eval_name).group(1))  # type: ignore[union-attr]
    if frame_names is not None and index < len(frame_names):
        return frame_names[index]
    return f"held-out view {index}"


def _halves(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and render of one nerfstudio evaluation image."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    width = pixels.shape[1] // 2
    return pixels[:, :width], pixels[:, width : 2 * width]


def comparison_picture(
    render_dirs: dict[str, Path],
    path: Path,
    title: str = "",
    max_views: int = 4,
    labels: dict[str, str] | None = None,
    frame_names: Sequence[str] | None = None,
) -> Path | None:
    """Write ``path`` (PNG) comparing the methods' renders of the first ``max_views`` held-out views.

    Columns: ground truth, then each method titled by :func:`method_title`; ``labels`` adds a line under a
    method's title (e.g. its PSNR). Rows are labelled with ``frame_names`` (see :func:`eval_frame_names`),
    else with the evaluation index. Returns None when no renders exist.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    methods = [m for m, folder in render_dirs.items() if any(folder.glob(EVAL_IMAGE_GLOB))]
    if not methods:
        return None
    names: list[str] = [p.name for p in sorted(render_dirs[methods[0]].glob(EVAL_IMAGE_GLOB))[:max_views]]
    names = [n for n in names if all((render_dirs[m] / n).is_file() for m in methods)]
    if not names:
        return None
    columns = 1 + len(methods)
    height, width = _halves(render_dirs[methods[0]] / names[0])[0].shape[:2]
    tile = 2.2
    figure, axes = plt.subplots(
        len(names),
        columns,
        squeeze=False,
        figsize=(
            tile * columns * width / max(height, width) + 0.4,
            tile * len(names) * height / max(height, width) + 0.8,
        ),
    )
    for row, name in enumerate(names):
        ground_truth, _ = _halves(render_dirs[methods[0]] / name)
        tiles = [ground_truth] + [_halves(render_dirs[m] / name)[1] for m in methods]
        for column, pixels in enumerate(tiles):
            axis = axes[row, column]
            axis.imshow(pixels, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                method = methods[column - 1] if column > 0 else ""
                label = method_title(method) if column > 0 else "ground truth"
                extra = (labels or {}).get(method) if column > 0 else None
                axis.set_title(label + (f"\n{extra}" if extra else ""), fontsize=8)
            if column == 0:
                axis.set_ylabel(_row_label(name, frame_names), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def repaired_clip_picture(
    views: Any,
    path: Path,
    max_frames: int = 8,
    rounds: int | None = None,
    method: str = "",
    folder_name: str = "",
) -> Path | None:
    """Write ``path`` (PNG): a repair round's renders (top row) above what the video model made of them.

    ``views`` is a :class:`genfusion_ns.fusion.views.RepairedViews` with ``input_rgb``; up to ``max_frames``
    evenly spread frames are shown, each column titled with its file in the round folder (``frame_XXXX.png``).
    The title names the round, its training step and, given ``rounds``, how many rounds the run had (``views``
    being the last). None without inputs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if views.input_rgb is None or len(views) == 0:
        return None
    count = len(views)
    picks = np.linspace(0, count - 1, num=min(max_frames, count)).round().astype(int)
    picks = list(dict.fromkeys(int(i) for i in picks))
    frame_files = [p.name for p in views.file_paths(Path(folder_name or "."))[0]]
    height, width = views.height, views.width
    tile = 1.6
    aspect = width / max(height, width), height / max(height, width)
    figure, axes = plt.subplots(
        2, len(picks), squeeze=False, figsize=(tile * len(picks) * aspect[0] + 1.4, 2 * tile * aspect[1] + 1),
    )
    rows = (("render\n(video model\ninput)", views.input_rgb), ("repair\n(video model\noutput)", views.rgb))
    for row, (row_label, frames) in enumerate(rows):
        for column, index in enumerate(picks):
            axis = axes[row, column]
            axis.imshow(frames[index].detach().cpu().numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(frame_files[index], fontsize=7)
            if column == 0:
                axis.set_ylabel(row_label, fontsize=8, rotation=0, ha="right", va="center")
    which = f"repair round {rounds} of {rounds}" if rounds else "repair round"
    folder = folder_name or f"round_{views.round_index:02d}"
    shown = f"{len(picks)} of its {count} frames" if len(picks) < count else f"all {count} frames"
    figure.suptitle(
        f"{method + ': ' if method else ''}{which} (folder {folder}, training step {views.step})\n"
        f"{shown}: the render the video model got (top) and its repair (bottom)",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
