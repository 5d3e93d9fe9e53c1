"""A COLMAP model to the files of a nerfstudio dataset, through nerfstudio's own converter.

The model is held in nerfstudio's named tuples (``colmap_parsing_utils.Camera``, ``Image``, ``Point3D``), so
this module needs no pycolmap: it writes ``colmap/sparse/0/{cameras,images,points3D}.bin`` (COLMAP's binary
format, readable by COLMAP, pycolmap and ``ns-process-data --skip-colmap``) and then runs
``nerfstudio.process_data.colmap_utils.colmap_to_json`` on it, the very function ``ns-process-data`` ends
with. So ``transforms.json`` has nerfstudio's conventions by construction: OpenGL camera axes (x right, y up,
looking along -z), the world turned z-up by ``applied_transform`` (COLMAP's y-down world), one shared camera
at the top level (or one per frame when there are several), COLMAP's camera model turned into nerfstudio's
``OPENCV`` with its distortion terms, and ``ply_file_path`` naming ``sparse_pc.ply`` (the points, moved by
``applied_transform``). """

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nerfstudio.data.utils.colmap_parsing_utils import Camera, Image, Point3D, write_model
from nerfstudio.process_data.colmap_utils import colmap_to_json

MODEL_DIR = Path("colmap") / "sparse"
"""Where ns-process-data leaves COLMAP's models (``0``: the one transforms.json comes from)."""
PLY_NAME = "sparse_pc.ply"


def write_colmap_model(
    folder: Path, cameras: Mapping[int, Camera], images: Mapping[int, Image], points3D: Mapping[int, Point3D]
) -> Path:
    """Write a model in COLMAP's binary format into ``folder`` (created); images in id order."""
    folder.mkdir(parents=True, exist_ok=True)
    write_model(
        dict(sorted(cameras.items())),
        dict(sorted(images.items())),
        dict(sorted(points3D.items())),
        str(folder),
        ext=".bin",
    )
    return folder


def write_dataset_files(
    output: Path, cameras: Mapping[int, Camera], images: Mapping[int, Image], points3D: Mapping[int, Point3D]
) -> int:
    """Write ``colmap/sparse/0``, ``transforms.json`` and ``sparse_pc.ply`` into ``output``; returns the frame
    count.

    ``images`` are the registered photos, named as in ``output/images/``. A single camera must have id 1 to be
    written once at the top level (nerfstudio's rule); any other set of cameras is written per frame.
    """
    model = write_colmap_model(output / MODEL_DIR / "0", cameras, images, points3D)
    return colmap_to_json(recon_dir=model, output_dir=output, ply_filename=PLY_NAME)
