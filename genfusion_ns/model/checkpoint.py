"""Checkpoint helpers: loading nerfstudio checkpoints under torch >= 2.6 and resuming with changed surfel counts.

torch >= 2.6 loads with ``weights_only=True`` by default, and nerfstudio 1.1.5 checkpoints hold numpy scalars (the
learning rates written by ``ExponentialDecayScheduler``), so resume, ``ns-eval``, ``ns-viewer`` and ``ns-export`` fail
with "Unsupported global: numpy.core.multiarray.scalar". Registering the few numpy types involved as safe globals
fixes every loader at once without turning off the safety check; ``genfusion_ns.method_configs`` does it at import,
which every ``ns-*`` command performs before loading a checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def numpy_scalar_globals() -> list[type]:
    """The numpy objects a pickled numpy scalar refers to: the scalar reconstructor and the dtype classes."""
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        from numpy._core.multiarray import scalar
    else:
        from numpy.core.multiarray import scalar
    dtype_classes = {type(np.dtype(kind)) for kind in ("f2", "f4", "f8", "i4", "i8", "u1", "b1")}
    return [scalar, np.dtype, *sorted(dtype_classes, key=lambda cls: cls.__name__)]


def allow_numpy_scalars_in_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read nerfstudio checkpoints (no-op on torch without safe globals)."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals(numpy_scalar_globals())


def python_random_state(saved: Any) -> tuple:
    """A ``random.getstate()`` tuple back from a checkpoint, for ``random.setstate`` (the inner state must be a
    tuple; a checkpoint may hand it back as a list)."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss
