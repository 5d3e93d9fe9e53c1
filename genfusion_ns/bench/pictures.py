"""Comparison pictures: held-out views as rows, ground truth then each method's render as columns (matplotlib).

The tiles are nerfstudio's own evaluation images (``eval_img_XXXX.png``: ground truth | render side by side, written
by ``get_average_eval_image_metrics``), so the picture shows exactly what was scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EVAL_IMAGE_GLOB = "eval_img_*.png"


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
) -> Path | None:
    """Write ``path`` (PNG) comparing the methods' renders of the first ``max_views`` held-out views.

    ``labels`` adds a line under a method's column title (e.g. its PSNR). Returns None when no renders exist.
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
                label = "ground truth" if column == 0 else methods[column - 1]
                extra = (labels or {}).get(label) if column > 0 else None
                axis.set_title(label + (f"\n{extra}" if extra else ""), fontsize=8)
            if column == 0:
                axis.set_ylabel(Path(name).stem.replace("eval_img_", "view "), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
