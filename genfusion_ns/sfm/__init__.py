"""Photos to a nerfstudio dataset with pip-installable tools: ``genfusion-process-photos``.

nerfstudio's ``ns-process-data images`` needs the COLMAP program (not on PyPI) even to convert an existing
model; this package runs the same structure from motion through pycolmap (the ``sfm`` extra) and writes the
dataset ``ns-process-data`` writes, with nerfstudio's own converter (``colmap_utils.colmap_to_json``):

* :mod:`.photos` -- finding, checking and copying the photos, the ``images_2/4/8`` downscales (no pycolmap);
* :mod:`.transforms` -- a COLMAP model (nerfstudio's named tuples) to ``colmap/sparse/N``, ``transforms.json``
and
  ``sparse_pc.ply`` (no pycolmap);
* :mod:`.reconstruct` -- features, matching and incremental mapping with pycolmap, and why photos stayed out;
* :mod:`.cli` -- the command; :mod:`.subset` -- a few consecutive frames of a processed scene, downscaled (the
  test data ``tests/data/lund_small`` was cut with it).
"""

from .config import COMMAND, ProcessPhotosConfig
from .photos import PhotoError

__all__ = ["COMMAND", "PhotoError", "ProcessPhotosConfig"]
