"""Structure from motion on a photo folder: how many photos ``genfusion-process-photos`` registers, and how
fast.

Each repeat runs the command in-process into a fresh temporary folder and prints registered N of M, the wall
time of each step, the mean reprojection error, the points, the camera and the photos left out (with the
reason). ``--baseline`` first runs pycolmap with its own defaults (exhaustive matching, default camera mode
and mapper: what ``pycolmap.extract_features`` / ``match_exhaustive`` / ``incremental_mapping`` do
unconfigured), to compare. ``--set FIELD=VALUE`` changes any other option (the levers of docs/benchmarks.md).
The photo folder is only read.

Example (the figures in docs/benchmarks.md, "Real captures: structure from motion")::

    python benchmarks/process_photos.py ../shared/real/lund/images --repeats 3 --baseline
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from genfusion_ns.sfm.cli import process_photos, summary_lines
from genfusion_ns.sfm.config import ProcessPhotosConfig
from genfusion_ns.sfm.reconstruct import import_pycolmap


def pycolmap_defaults(photos: Path, work: Path) -> str:
    """Register the photos with pycolmap's defaults only; one line with the figures."""
    pycolmap = import_pycolmap()
    pycolmap.logging.minloglevel = 2
    database = work / "database.db"
    start = time.perf_counter()
    pycolmap.extract_features(database, photos)
    features = time.perf_counter() - start
    pycolmap.match_exhaustive(database)
    matching = time.perf_counter() - start - features
    (work / "sparse").mkdir()
    models = pycolmap.incremental_mapping(database, photos, work / "sparse")
    total = time.perf_counter() - start
    ranked = sorted(models.values(), key=lambda model: model.num_reg_images(), reverse=True)
    count = len([path for path in photos.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png")])
    if not ranked:
        return f"pycolmap defaults: no model ({total:.1f} s)"
    best = ranked[0]
    sizes = ", ".join(str(model.num_reg_images()) for model in ranked)
    return (
        f"pycolmap defaults: registered {best.num_reg_images()} of {count} in the largest of {len(ranked)} "
        f"model(s) (sizes {sizes}); {total:.1f} s (features {features:.1f}, matching {matching:.1f}, mapping "
        f"{total - features - matching:.1f}); reprojection error "
        f"{best.compute_mean_reprojection_error():.3f} "
        f"px, {best.num_points3D()} points"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("photos", type=Path)
    parser.add_argument("--repeats", type=int, default=1, help="runs of genfusion-process-photos")
    parser.add_argument("--baseline", action="store_true", help="also run pycolmap with its defaults")
    parser.add_argument("--num-threads", type=int, default=-1)
    parser.add_argument("--matching", choices=("sequential", "exhaustive"), default="sequential")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="another ProcessPhotosConfig field, e.g. --set camera_model=OPENCV",
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        name, _, text = item.partition("=")
        default = getattr(ProcessPhotosConfig(photos=Path(), output=Path()), name)
        overrides[name] = text == "True" if isinstance(default, bool) else type(default)(text)

    with tempfile.TemporaryDirectory(prefix="process-photos-") as scratch:
        root = Path(scratch)
        if args.baseline:
            (root / "baseline").mkdir()
            print(pycolmap_defaults(args.photos, root / "baseline"), flush=True)
        registered, totals, errors = [], [], []
        for repeat in range(args.repeats):
            config = ProcessPhotosConfig(
                photos=args.photos,
                output=root / f"scene-{repeat}",
                num_threads=args.num_threads,
                matching=args.matching,
                **overrides,
            )
            summary = process_photos(config, log=lambda _: None)
            print(f"--- run {repeat + 1} of {args.repeats}")
            print("\n".join(summary_lines(summary)[:-1]), flush=True)
            registered.append(summary.num_registered)
            totals.append(summary.seconds["total"])
            errors.append(summary.mean_reprojection_error)
        if args.repeats > 1:
            print(
                f"=== {args.repeats} runs: registered {min(registered)}-{max(registered)} of "
                f"{summary.num_photos}; time {statistics.mean(totals):.1f} s mean "
                f"({min(totals):.1f}-{max(totals):.1f}); reprojection error "
                f"{min(errors):.3f}-{max(errors):.3f} px"
            )


if __name__ == "__main__":
    main()
