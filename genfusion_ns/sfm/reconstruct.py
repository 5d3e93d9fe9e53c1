"""Structure from motion with pycolmap: features, matching, incremental mapping, and why a photo stayed out.

The steps are COLMAP's (what ``ns-process-data`` runs through the ``colmap`` program): SIFT features into
``colmap/database.db``, matching with geometric verification, incremental mapping. The defaults differ where
COLMAP's do not suit a phone walk (``ProcessPhotosConfig``): sequential matching, one shared camera
initialised from the EXIF focal length, a mapper that accepts a forward-moving first pair, and a few mapping
runs with other seeds while photos are left out. With multiple models the largest (most photos, then most
points) becomes the dataset; the others that hold photos it lacks are written beside it (``colmap/sparse/1``,
...) and reported.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nerfstudio.data.utils.colmap_parsing_utils import Camera, Image, Point3D

from genfusion_ns.errors import UserError

from .config import ProcessPhotosConfig

PYCOLMAP_MIN_VERSION = (4, 2)
INSTALL_HINT = 'pip install -e ".[sfm]" (from the genfusion checkout) or pip install "pycolmap>=4.2"'
FEW_FEATURES = 100
"""Fewer SIFT features than this: the photo itself is the problem (blurred, dark, overexposed,
textureless)."""
MIN_VERIFIED_MATCHES = 15
"""COLMAP's default ``min_num_matches``: a pair with fewer verified matches does not connect two photos."""

Model = tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]
"""A reconstruction in nerfstudio's named tuples: cameras, registered images, points by id."""


class SfmUnavailable(UserError, ImportError):
    """pycolmap is not installed (or too old)."""


class SfmFailed(UserError, RuntimeError):
    """Structure from motion found no usable model; the message lists why the photos did not connect."""


@dataclass(frozen=True)
class Unregistered:
    """A photo without a pose in the dataset, and the reason read from the database and the other models."""

    name: str
    source: Path
    reason: str


@dataclass
class SfmResult:
    """The model the dataset is made from, the smaller ones, and the figures of the run."""

    model: Model
    other_models: list[Model]
    unregistered: list[Unregistered]
    num_photos: int
    mean_reprojection_error: float
    seconds: dict[str, float] = field(default_factory=dict)
    focal_prior: float | None = None
    """The first camera's starting focal length (pixels) when COLMAP took it from the EXIF, else None."""

    @property
    def num_registered(self) -> int:
        return len(self.model[1])

    @property
    def num_points(self) -> int:
        return len(self.model[2])


def import_pycolmap() -> Any:
    """pycolmap, or :class:`SfmUnavailable` saying how to install it (it is the optional ``sfm`` extra)."""
    try:
        import pycolmap
    except ImportError as error:
        raise SfmUnavailable(
            f"Structure from motion needs pycolmap, which is not installed: {INSTALL_HINT}."
        ) from error
    version = tuple(int(part) for part in pycolmap.__version__.split(".")[:2] if part.isdigit())
    if version < PYCOLMAP_MIN_VERSION:
        raise SfmUnavailable(
            f"pycolmap {pycolmap.__version__} is too old (the options used here are those of "
            f"4.2): {INSTALL_HINT}."
        )
    return pycolmap


def _set_option(options: Any, name: str, value: Any) -> None:
    """Set ``options.<name>`` where pycolmap has it (field names move between releases; never fail on one)."""
    if hasattr(options, name):
        setattr(options, name, value)


def _to_tuples(pycolmap: Any, reconstruction: Any) -> Model:
    """A pycolmap reconstruction's registered images, their cameras and its points as nerfstudio's tuples."""
    invalid = pycolmap.INVALID_POINT3D_ID
    images: dict[int, Image] = {}
    for image_id, image in reconstruction.images.items():
        if not image.has_pose:
            continue
        pose = image.cam_from_world()
        x, y, z, w = pose.rotation.quat  # Eigen order; COLMAP's files are scalar-first
        points2D = image.points2D
        xys = np.array([point.xy for point in points2D], dtype=np.float64).reshape(-1, 2)
        ids = np.array(
            [point.point3D_id if point.point3D_id != invalid else -1 for point in points2D], dtype=np.int64
        )
        images[image_id] = Image(
            id=image_id,
            qvec=np.array([w, x, y, z], dtype=np.float64),
            tvec=np.asarray(pose.translation, dtype=np.float64),
            camera_id=image.camera_id,
            name=image.name,
            xys=xys,
            point3D_ids=ids,
        )
    cameras = {
        camera_id: Camera(
            id=camera_id,
            model=camera.model.name,
            width=int(camera.width),
            height=int(camera.height),
            params=np.asarray(camera.params, dtype=np.float64),
        )
        for camera_id, camera in reconstruction.cameras.items()
        if any(image.camera_id == camera_id for image in images.values())
    }
    points: dict[int, Point3D] = {}
    for point_id, point in reconstruction.points3D.items():
        elements = point.track.elements
        points[point_id] = Point3D(
            id=point_id,
            xyz=np.asarray(point.xyz, dtype=np.float64),
            rgb=np.asarray(point.color, dtype=np.uint8),
            error=float(point.error),
            image_ids=np.array([e.image_id for e in elements], dtype=np.int64),
            point2D_idxs=np.array([e.point2D_idx for e in elements], dtype=np.int64),
        )
    return cameras, images, points


def _verified_partners(pycolmap: Any, database: Any) -> dict[int, list[tuple[int, int]]]:
    """For each image id: ``(other image id, verified matches)`` of the pairs that passed geometric
    verification."""
    partners: dict[int, list[tuple[int, int]]] = defaultdict(list)
    pair_ids, geometries = database.read_two_view_geometries()
    for pair_id, geometry in zip(pair_ids, geometries):
        count = int(np.asarray(geometry.inlier_matches).shape[0])
        if count < MIN_VERIFIED_MATCHES:
            continue
        first, second = pycolmap.pair_id_to_image_pair(pair_id)
        partners[first].append((second, count))
        partners[second].append((first, count))
    return partners


def _reasons(
    pycolmap: Any,
    database_path: Path,
    config: ProcessPhotosConfig,
    registered: set[str],
    other_models: list[Model],
    sources: dict[str, Path],
) -> list[Unregistered]:
    """Why each photo outside the main model stayed out, most basic cause first."""
    database = pycolmap.Database.open(str(database_path))
    try:
        images = {image.image_id: image.name for image in database.read_all_images()}
        ids = {name: image_id for image_id, name in images.items()}
        features = {image_id: database.num_keypoints_for_image(image_id) for image_id in images}
        partners = _verified_partners(pycolmap, database)
    finally:
        database.close()
    model_of = {image.name: index for index, model in enumerate(other_models) for image in model[1].values()}
    found = []
    for name in sorted(sources):
        if name in registered:
            continue
        image_id = ids.get(name)
        count = features.get(image_id, 0) if image_id is not None else 0
        matched = (
            sorted(partners.get(image_id, []), key=lambda pair: -pair[1]) if image_id is not None else []
        )
        if image_id is None:
            reason = "pycolmap could not read it"
        elif count < FEW_FEATURES:
            reason = f"only {count} features found in it (blurred, dark, overexposed or textureless?)"
        elif not matched:
            reason = f"no verified matches with any other photo ({count} features)"
            if config.matching == "sequential":
                reason += (
                    f"; sequential matching only tries the {config.overlap} photos before and after it in "
                    "file order: if it was taken elsewhere in the capture, try --matching exhaustive"
                )
        elif name in model_of:
            model = other_models[model_of[name]][1]
            members = ", ".join(
                sources[image.name].name for image in sorted(model.values(), key=lambda i: i.name)
            )
            reason = (
                f"in a separate model of {len(model)} photos ({members}) that shares too few points with the "
                "main one"
            )
        else:
            best_id, best = matched[0]
            reason = (
                f"matched {len(matched)} photos (best: {best} verified matches with "
                f"{sources[images[best_id]].name}) but its pose could not be estimated from the model's "
                f"points (it needs {config.abs_pose_min_num_inliers} 2D-3D inliers, "
                "--abs-pose-min-num-inliers)"
                if registered
                else f"matched {len(matched)} photos (best: {best} verified matches with "
                f"{sources[images[best_id]].name})"
            )
        found.append(Unregistered(name, sources[name], reason))
    return found


def run_sfm(
    images_dir: Path,
    colmap_dir: Path,
    sources: dict[str, Path],
    config: ProcessPhotosConfig,
    same_size: bool,
    log: Callable[[str], None] = print,
) -> SfmResult:
    """Run features, matching and mapping on ``images_dir`` (frame names, the keys of ``sources``) with the
    database in ``colmap_dir``; raises :class:`SfmFailed` when no model holds two photos."""
    pycolmap = import_pycolmap()
    if not config.verbose:
        pycolmap.logging.minloglevel = 2  # glog's ERROR: no per-image INFO and WARNING lines
    colmap_dir.mkdir(parents=True, exist_ok=True)
    database = colmap_dir / "database.db"
    database.unlink(missing_ok=True)
    names = sorted(sources)
    seconds: dict[str, float] = {}
    if config.seed >= 0:
        pycolmap.set_random_seed(config.seed)

    start = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    if config.single_camera:
        camera_mode = pycolmap.CameraMode.SINGLE if same_size else pycolmap.CameraMode.AUTO
    else:
        camera_mode = pycolmap.CameraMode.PER_IMAGE
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = config.max_image_size
    extraction.num_threads = config.num_threads
    extraction.sift.max_num_features = config.max_num_features
    pycolmap.extract_features(
        database,
        images_dir,
        image_names=names,
        camera_mode=camera_mode,
        reader_options=reader,
        extraction_options=extraction,
    )
    seconds["features"] = time.perf_counter() - start
    log(f"features: {len(names)} photos in {seconds['features']:.1f} s")
    focal_prior = _focal_prior(pycolmap, database)

    start = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    if config.matching == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = config.overlap
        pairing.quadratic_overlap = False
        pairing.loop_detection = False  # needs a vocabulary tree, a separate download
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing)
    else:
        pycolmap.match_exhaustive(database, matching_options=matching)
    seconds["matching"] = time.perf_counter() - start
    log(f"matching ({config.matching}): {seconds['matching']:.1f} s")

    start = time.perf_counter()
    models: list[Model] = []
    error = float("nan")
    for attempt in range(max(1, config.mapping_attempts)):
        seed = config.seed + attempt if config.seed >= 0 else -1
        scratch = colmap_dir / "mapper"
        found, found_error = _map(pycolmap, database, images_dir, scratch, config, seed, len(names))
        size = len(found[0][1]) if found else 0
        log(f"mapping attempt {attempt + 1} (seed {seed}): {size} of {len(names)} photos in the largest of "
            f"{len(found)} model(s)")
        if found and (not models or (size, len(found[0][2])) > (len(models[0][1]), len(models[0][2]))):
            models, error = found, found_error
        if models and len(models[0][1]) == len(names):
            break
    seconds["mapping"] = time.perf_counter() - start
    log(f"mapping: {seconds['mapping']:.1f} s")

    # a two-photo model of a larger set is a failed start (its camera is rarely sensible), not a result
    main = models[0] if models and len(models[0][1]) >= min(3, len(names)) else None
    registered = {image.name for image in main[1].values()} if main else set()
    # Failed starts come back as small models of photos the main model holds too: they add nothing, drop them.
    others = [
        model
        for model in (models[1:] if main else models)
        if any(image.name not in registered for image in model[1].values())
    ]
    unregistered = _reasons(pycolmap, database, config, registered, others, sources)
    if main is None:
        matched = [item for item in unregistered if item.reason.startswith("matched")]
        if len(matched) >= min(3, len(names)):
            raise SfmFailed(
                f"Structure from motion found no model of {min(3, len(names))} or more photos in "
                f"{config.mapping_attempts} mapping attempt(s), although {len(matched)} of {len(names)} "
                "photos have verified matches: no first pair passed the mapper's checks (--init-min-num-inliers "
                f"{config.init_min_num_inliers}, --init-min-tri-angle {config.init_min_tri_angle}, "
                f"--init-max-forward-motion {config.init_max_forward_motion}). Try --init-min-tri-angle 2 "
                "--init-min-num-inliers 30, more --mapping-attempts, or --matching exhaustive."
            )
        causes = "; ".join(f"{item.source.name}: {item.reason}" for item in unregistered[:5])
        more = f" (and {len(unregistered) - 5} more)" if len(unregistered) > 5 else ""
        raise SfmFailed(
            f"Structure from motion found no model: the photos did not connect. {causes}{more}. "
            "Photos need plenty of overlap (each seen from 2+ others); try --matching exhaustive for "
            "unordered photos, or more photos."
        )
    return SfmResult(main, others, unregistered, len(names), error, seconds, focal_prior)


def _map(pycolmap: Any, database: Path, images_dir: Path, scratch: Path, config: ProcessPhotosConfig,
         seed: int, num_photos: int) -> tuple[list[Model], float]:
    """One incremental mapping run: its models, largest first, and the largest one's reprojection error."""
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = config.num_threads
    options.random_seed = seed
    options.min_model_size = min(options.min_model_size, num_photos)
    mapper = options.mapper
    mapper.init_min_num_inliers = config.init_min_num_inliers
    mapper.init_min_tri_angle = config.init_min_tri_angle
    mapper.init_max_forward_motion = config.init_max_forward_motion
    mapper.abs_pose_min_num_inliers = config.abs_pose_min_num_inliers
    _set_option(mapper, "random_seed", seed)
    if seed >= 0:
        pycolmap.set_random_seed(seed)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        reconstructions = pycolmap.incremental_mapping(database, images_dir, scratch, options)
        ranked = sorted(reconstructions.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()),
                        reverse=True)
        models = [_to_tuples(pycolmap, reconstruction) for reconstruction in ranked]
        error = float(ranked[0].compute_mean_reprojection_error()) if ranked else float("nan")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return models, error


def _focal_prior(pycolmap: Any, database_path: Path) -> float | None:
    database = pycolmap.Database.open(str(database_path))
    try:
        cameras = database.read_all_cameras()
    finally:
        database.close()
    if cameras and cameras[0].has_prior_focal_length:
        return float(cameras[0].mean_focal_length())
    return None
