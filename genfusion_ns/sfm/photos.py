"""The photos of ``genfusion-process-photos``: found and checked before any work, copied as ns-process-data
does.

``ns-process-data images`` copies ``sorted(list_images(data))`` (sub-folders included) to
``images/frame_00001<suffix>``, ... and writes ``images_2/``, ``images_4/``, ``images_8/`` with ffmpeg's
``scale=iw/N:ih/N`` (sizes rounded down) at JPEG quality ``-q:v 2``. We do the same with PIL, which also
applies an EXIF orientation (a phone's portrait photo) to the pixels: ns-process-data's fast path copies the
file and downscales with ``-noautorotate``, so COLMAP, the copies and the downscales can disagree on which way
is up. """

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from genfusion_ns.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
"""What ``nerfstudio.process_data.process_data_utils.list_images`` takes, less raw files (they need rawpy)."""
RAW_EXTENSIONS = (".cr2", ".dng", ".nef", ".arw")
JPEG_QUALITY = 95
"""Quality of re-encoded JPEGs (rotated photos, downscales): close to ffmpeg's ``-q:v 2``."""
EXIF_ORIENTATION = 0x0112


class PhotoError(UserError, ValueError):
    """A photo folder or photo the command cannot use; the message names the file and what to do."""


@dataclass(frozen=True)
class Photo:
    """One input photo: where it is, its upright size and whether its EXIF asks for a rotation."""

    path: Path
    width: int
    height: int
    rotated: bool


def list_photos(folder: Path) -> list[Path]:
    """The photos in ``folder`` in the order ns-process-data numbers them (sorted paths, sub-folders
    included)."""
    if not folder.exists():
        raise PhotoError(f"Photo folder {folder} does not exist; pass the folder that holds your photos.")
    if not folder.is_dir():
        raise PhotoError(f"{folder} is not a folder; pass the folder that holds your photos.")
    files = sorted(path for path in folder.glob("**/[!.]*") if path.is_file())
    raw = [path for path in files if path.suffix.lower() in RAW_EXTENSIONS]
    if raw:
        raise PhotoError(
            f"{raw[0]} is a raw photo ({len(raw)} in {folder}); convert raw photos to JPEG or PNG first."
        )
    photos = [path for path in files if path.suffix.lower() in IMAGE_EXTENSIONS]
    if not photos:
        raise PhotoError(
            f"No photos in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, sub-folders included)."
        )
    if len(photos) < 2:
        raise PhotoError(
            f"{folder} holds only one photo ({photos[0].name}); structure from motion needs at least "
            "two overlapping photos, ideally 20 or more."
        )
    return photos


def check_photo(path: Path) -> Photo:
    """Decode ``path`` completely (a truncated JPEG fails here, not halfway through SfM) and read its
    orientation."""
    try:
        with Image.open(path) as image:
            image.load()
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            width, height = image.size
    except Exception as error:
        raise PhotoError(
            f"Photo {path} cannot be read ({type(error).__name__}: {error}); replace or remove it."
        ) from error
    rotated = orientation in (5, 6, 7, 8)
    return Photo(
        path, height if rotated else width, width if rotated else height, orientation not in (1, None)
    )


def frame_name(index: int, path: Path) -> str:
    """ns-process-data's name for the ``index``-th photo (0-based): ``frame_00001.jpg`` keeps the suffix."""
    return f"frame_{index + 1:05d}{path.suffix}"


def _save(image: Image.Image, path: Path, exif: bytes | None = None) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.convert("RGB").save(path, quality=JPEG_QUALITY, **({"exif": exif} if exif else {}))
    else:
        image.save(path)


def copy_photos(photos: list[Photo], images_dir: Path, num_downscales: int) -> dict[str, Path]:
    """Copy the photos to ``images_dir`` (upright, EXIF kept for the focal-length prior) and write the
    downscales ``<images_dir>_2``, ``_4``, ...; returns each frame name's source photo."""
    folders = [images_dir] + [
        images_dir.with_name(f"{images_dir.name}_{2**level}") for level in range(1, num_downscales + 1)
    ]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for index, photo in enumerate(photos):
        name = frame_name(index, photo.path)
        sources[name] = photo.path
        target = images_dir / name
        with Image.open(photo.path) as original:
            if photo.rotated:  # pixels upright, orientation tag reset, other EXIF (focal length) kept
                upright = ImageOps.exif_transpose(original)
                _save(upright, target, upright.getexif().tobytes())
            else:
                shutil.copyfile(photo.path, target)
                upright = original.copy()
        if upright.mode in ("P", "PA", "1"):  # palette and bilevel images do not resample
            upright = upright.convert(
                "RGBA" if "A" in upright.mode or "transparency" in upright.info else "RGB"
            )
        for level, folder in enumerate(folders[1:], start=1):
            factor = 2**level
            size = (max(1, upright.width // factor), max(1, upright.height // factor))
            _save(upright.resize(size, Image.Resampling.BICUBIC), folder / name)
    return sources
