"""``genfusion-process-photos PHOTOS --output SCENE``: photos to a nerfstudio dataset, pycolmap instead of
COLMAP.

Everything that can be checked is checked before anything is written (the photos decode, pycolmap imports, the
options make sense, the output folder may be written); the dataset is written into ``SCENE.partial`` and
renamed into place when complete (``genfusion_ns.outputs``), so a failed run leaves no half-made dataset.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import tyro

from genfusion_ns.errors import UserError
from genfusion_ns.outputs import check_output_folder, exit_with_error, staged_output_folder

from .config import COMMAND, ProcessPhotosConfig
from .photos import check_photo, copy_photos, list_photos
from .reconstruct import SfmResult, Unregistered, import_pycolmap, run_sfm
from .transforms import MODEL_DIR, write_colmap_model, write_dataset_files

SUMMARY_FILE = Path("colmap") / "summary.json"
"""The run's figures and settings, beside COLMAP's files (nerfstudio reads nothing there)."""


class ProcessPhotosError(UserError, ValueError):
    """An option or the output folder of ``genfusion-process-photos`` is wrong; the message says how."""


@dataclass
class ProcessPhotosSummary:
    """What a run did: the figures its last lines print and ``colmap/summary.json`` holds."""

    output: Path
    num_photos: int
    num_registered: int
    num_points: int
    mean_reprojection_error: float
    camera: str
    focal_prior: float | None
    other_models: list[list[str]]
    unregistered: list[Unregistered]
    seconds: dict[str, float]

    def to_json(self) -> dict:
        data = asdict(self)
        data["output"] = str(self.output)
        data["unregistered"] = [
            {"name": item.name, "source": str(item.source), "reason": item.reason}
            for item in self.unregistered
        ]
        return data


def _check_options(config: ProcessPhotosConfig) -> None:
    problems = [
        (
            config.overlap < 1,
            f"--overlap {config.overlap}: match each photo with at least 1 following photo.",
        ),
        (config.max_image_size < 64, f"--max-image-size {config.max_image_size}: use at least 64 pixels."),
        (config.max_num_features < 100, f"--max-num-features {config.max_num_features}: use at least 100."),
        (config.num_downscales < 0, f"--num-downscales {config.num_downscales}: use 0 or more."),
        (config.mapping_attempts < 1, f"--mapping-attempts {config.mapping_attempts}: use 1 or more."),
        (
            config.init_min_num_inliers < 5,
            f"--init-min-num-inliers {config.init_min_num_inliers}: use 5 or more.",
        ),
        (
            config.abs_pose_min_num_inliers < 4,
            f"--abs-pose-min-num-inliers {config.abs_pose_min_num_inliers}: a pose needs at least 4 points.",
        ),
        (
            not 0 < config.init_max_forward_motion <= 1,
            f"--init-max-forward-motion {config.init_max_forward_motion}: a share in (0, 1].",
        ),
        (
            not 0 <= config.init_min_tri_angle < 90,
            f"--init-min-tri-angle {config.init_min_tri_angle}: degrees in [0, 90).",
        ),
    ]
    for failed, message in problems:
        if failed:
            raise ProcessPhotosError(message)


def _camera_text(result: SfmResult) -> str:
    cameras = result.model[0]
    if len(cameras) != 1:
        return f"{len(cameras)} cameras"
    camera = next(iter(cameras.values()))
    values = ", ".join(f"{value:.4g}" for value in camera.params)
    return f"{camera.model} {camera.width}x{camera.height} ({values})"


def process_photos(config: ProcessPhotosConfig, log: Callable[[str], None] = print) -> ProcessPhotosSummary:
    """Write the dataset of ``config.photos`` into ``config.output``; the figures of the run are returned."""
    start = time.perf_counter()
    _check_options(config)
    paths = list_photos(config.photos)
    inputs = {"the photo folder": config.photos}
    check_output_folder(config.output, config.overwrite, COMMAND, inputs, error=ProcessPhotosError)
    photos = [check_photo(path) for path in paths]
    same_size = len({(photo.width, photo.height) for photo in photos}) == 1
    import_pycolmap()
    with staged_output_folder(
        config.output, config.overwrite, COMMAND, inputs, error=ProcessPhotosError
    ) as staged:
        copy_start = time.perf_counter()
        sources = copy_photos(photos, staged / "images", config.num_downscales)
        copying = time.perf_counter() - copy_start
        log(f"copied {len(photos)} photos and {config.num_downscales} downscales in {copying:.1f} s")
        result = run_sfm(staged / "images", staged / "colmap", sources, config, same_size, log)
        write_dataset_files(staged, *result.model)
        for index, model in enumerate(result.other_models, start=1):
            write_colmap_model(staged / MODEL_DIR / str(index), *model)
        seconds = {"copying": copying, **result.seconds, "total": time.perf_counter() - start}
        summary = ProcessPhotosSummary(
            output=Path(config.output),
            num_photos=result.num_photos,
            num_registered=result.num_registered,
            num_points=result.num_points,
            mean_reprojection_error=result.mean_reprojection_error,
            camera=_camera_text(result),
            focal_prior=result.focal_prior,
            other_models=[
                sorted(sources[image.name].name for image in model[1].values())
                for model in result.other_models
            ],
            unregistered=result.unregistered,
            seconds=seconds,
        )
        settings = {
            key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()
        }
        files = {name: str(path) for name, path in sources.items()}
        (staged / SUMMARY_FILE).write_text(
            json.dumps({**summary.to_json(), "settings": settings, "sources": files}, indent=2) + "\n"
        )
    return summary


def summary_lines(summary: ProcessPhotosSummary) -> list[str]:
    """The closing report: registered N of M, which photos are missing and why, error, points, time."""
    seconds = summary.seconds
    steps = ", ".join(
        f"{name} {seconds[name]:.1f}"
        for name in ("copying", "features", "matching", "mapping")
        if name in seconds
    )
    error = (
        "n/a" if math.isnan(summary.mean_reprojection_error) else f"{summary.mean_reprojection_error:.3f} px"
    )
    prior = (
        f"; EXIF focal prior {summary.focal_prior:.1f} px" if summary.focal_prior else "; no EXIF focal prior"
    )
    lines = [
        (f"Registered {summary.num_registered} of {summary.num_photos} photos in {seconds['total']:.1f} s "
         f"({steps})."),
        f"Mean reprojection error {error}, {summary.num_points} points. Camera: {summary.camera}{prior}.",
    ]
    if summary.unregistered:
        lines.append(f"Not registered ({len(summary.unregistered)}):")
        lines += [f"  {item.source.name} ({item.name}): {item.reason}" for item in summary.unregistered]
    for index, names in enumerate(summary.other_models, start=1):
        lines.append(
            f"Smaller model colmap/sparse/{index} ({len(names)} photos, left out): {', '.join(names)}"
        )
    lines.append(f"Wrote {summary.output}. Train with: ns-train genfusion-2dgs-lite --data {summary.output}")
    return lines


def main(config: ProcessPhotosConfig) -> int:
    """Run the command; bad input exits with status 2 and one message on stderr."""
    from rich.console import Console

    console = Console(stderr=True)

    def log(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    try:
        summary = process_photos(config, log)
    except UserError as error:
        exit_with_error(COMMAND, error)
    for line in summary_lines(summary):
        Console().print(line, highlight=False, soft_wrap=True)
    return 0


def entrypoint() -> None:
    """``genfusion-process-photos PHOTOS --output SCENE``."""
    raise SystemExit(main(tyro.cli(ProcessPhotosConfig, description=ProcessPhotosConfig.__doc__)))


if __name__ == "__main__":
    entrypoint()
