"""Wheels for running ``benchmarks/gpu_check.py`` on an offline GPU machine that already has PyTorch.

The GPU machines lent to this project (Python 3.12, PyTorch, transformers, accelerate, numba, rich,
safetensors, the CUDA compiler; no package index) lack nerfstudio, gsplat, diffusers and a few small
packages, and the working tree plus everything sent with it may not exceed 64 MiB, of which the tracked tree
already takes about 55 MiB. This script downloads exactly the wheels the check's code paths import there
(found by loading every part at tiny size on CPU and subtracting the machine's package list;
docs/benchmarks.md "GPU check") and rewrites the large ones without what the check never reads: GLM's
documentation and tests inside gsplat's CUDA sources, the model-specific diffusers pipelines, viser's web
client (the check trains without a viewer), tensorly's sample datasets. It ends with the size of the bundle
next to the tree's and exits 1 when the two do not fit together.

    python benchmarks/device_bundle.py --out .whl     # here, with the package index (--overwrite: redo)
    # there (a device run carrying .whl; the report is copied under $OUT):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl \\
      && python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \\
      && python3 benchmarks/gpu_check.py --out /tmp/gpu_report; cp /tmp/gpu_report/report.* "$OUT"/
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from genfusion_ns.outputs import OutputFolderError, prepare_output_folder

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "benchmarks/device_bundle.py"
LIMIT_MIB = 64.0
"""What one device call may send: the working tree plus the carried paths."""

PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)

WHEELS: dict[str, tuple[str, ...]] = {
    # requirement: path prefixes inside the wheel that are left out ("folder/*/": every subfolder of folder;
    # "+prefix": kept all the same)
    "nerfstudio==1.1.5": (),
    "gsplat==1.4.0": ("gsplat/cuda/csrc/third_party/glm/doc/", "gsplat/cuda/csrc/third_party/glm/test/"),
    # model-specific pipelines out; pipelines/*.py and stable_diffusion (video/denoising.py) stay
    "diffusers==0.42.1": ("diffusers/pipelines/*/", "+diffusers/pipelines/stable_diffusion/"),
    "viser==0.2.7": ("viser/client/build/", "viser/client/public/", "viser/client/src/"),
    "tensorly==0.10.0": ("tensorly/datasets/data/",),
    "tyro==1.0.17": (),
    "docstring-parser==0.18.0": (),
    "typeguard==4.6.1": (),
    "nerfacc==0.5.2": (),
    "msgspec==0.23.0": (),
    "websockets==17.4": (),
    "splines==0.3.0": (),
    "pyquaternion==0.9.9": (),
    "pytorch-msssim==1.0.0": (),
    "fpsample==0.3.3": (),  # 1.0.2, the version installed here, has no cp312 wheel
    "pathos==0.3.5": (),
    "multiprocess==0.70.19": (),
    "ppft==1.7.8": (),
    "dill==0.4.1": (),
    "plyfile==1.1.3": (),
    "appdirs==1.4.4": (),
}


def download(requirement: str, folder: Path) -> Path:
    """The wheel of ``requirement`` for the GPU machine's Python and platform (no dependencies)."""
    before = set(folder.glob("*.whl"))
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON, "--implementation", "cp", *platforms, "-d", str(folder),
               requirement]
    subprocess.run(command, check=True)
    new = set(folder.glob("*.whl")) - before
    if len(new) != 1:
        raise RuntimeError(f"pip download {requirement} gave {sorted(p.name for p in new)}")
    return new.pop()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def left_out(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the wheel member ``name`` falls under one of ``prefixes`` (``folder/*/``: any subfolder; a
    ``+prefix`` keeps what it names)."""
    if any(name.startswith(prefix[1:]) for prefix in prefixes if prefix.startswith("+")):
        return False
    for prefix in prefixes:
        if prefix.startswith("+"):
            continue
        if prefix.endswith("*/"):
            folder = prefix[:-2]
            if name.startswith(folder) and "/" in name[len(folder) :]:
                return True
        elif name.startswith(prefix):
            return True
    return False


def without(wheel: Path, prefixes: tuple[str, ...], out: Path) -> Path:
    """``wheel`` rewritten into ``out`` without the files under ``prefixes``; RECORD lists what is left."""
    target = out / wheel.name
    with (
        zipfile.ZipFile(wheel) as source,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dest,
    ):
        names = [n for n in source.namelist() if not left_out(n, prefixes)]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        lines = []
        for name in names:
            if name == record:
                continue
            data = source.read(name)
            dest.writestr(source.getinfo(name), data)
            lines.append(f"{name},{_record_hash(data)},{len(data)}")
        lines.append(f"{record},,")
        dest.writestr(source.getinfo(record), "\n".join(lines) + "\n")
    return target


def tracked_bytes() -> int:
    """Size of the files git tracks (what every device call sends)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(
        b"\0"
    )
    return sum(
        (ROOT / name.decode()).stat().st_size for name in names if name and (ROOT / name.decode()).is_file()
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".whl", help="folder for the wheels (git-ignored)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier bundle written by this script")
    args = parser.parse_args()
    try:  # the project's output-folder policy: never clear a folder this script did not write
        prepare_output_folder(args.out, args.overwrite, COMMAND, flag="--out")
    except OutputFolderError as error:
        print(f"device_bundle.py: error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        for requirement, prefixes in WHEELS.items():
            wheel = download(requirement, Path(scratch))
            kept = without(wheel, prefixes, args.out)
            print(
                f"{kept.stat().st_size / 2**20:6.2f} MiB  {kept.name}"
                + (f"  (from {wheel.stat().st_size / 2**20:.2f} MiB)" if prefixes else "")
            )
    bundle = sum(p.stat().st_size for p in args.out.glob("*.whl")) / 2**20
    tree = tracked_bytes() / 2**20
    fits = tree + bundle <= LIMIT_MIB
    print(
        f"bundle {bundle:.2f} MiB + tracked tree {tree:.2f} MiB = {tree + bundle:.2f} MiB "
        f"({'fits' if fits else 'does NOT fit'} in one device call's {LIMIT_MIB:.0f} MiB)"
    )
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
