"""Real spherical harmonics colours, the same basis, ordering and degree handling as gsplat 1.4.0.

gsplat's ``spherical_harmonics`` is a CUDA kernel (its torch reference is private), so the CPU backend needs its
own. Basis ordering follows gsplat (degree l, order m = -l..l), evaluated with Sloan's recurrences
("Efficient Spherical Harmonic Evaluation", JCGT 2013). Coefficients of bands above ``degree`` are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_SH_DEGREE = 4


def num_sh_bases(degree: int) -> int:
    """Number of coefficients used by an SH expansion of the given degree."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values [..., (degree+1)^2] for unit directions [..., 3]."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {degree}.")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.2820947917738781)]
    if degree >= 1:
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        c1, s1 = x * x - y * y, 2 * x * y
        tb = -1.092548430592079 * z
        out += [
            0.5462742152960395 * s1,
            tb * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            tb * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        tb = 1.445305721320277 * z
        out += [
            -0.5900435899266435 * s2,
            tb * s1,
            tc * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tc * x,
            tb * c1,
            -0.5900435899266435 * c2,
        ]
    if degree >= 4:
        c3, s3 = x * c2 - y * s2, x * s2 + y * c2
        td = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tc = 3.31161143515146 * z2 - 0.47308734787878
        tb = -1.770130769779931 * z
        out += [
            0.6258357354491763 * s3,
            tb * s2,
            tc * s1,
            td * y,
            1.984313483298443 * z2 * (1.865881662950577 * z2 - 1.119528997770346)
            - 1.006230589874905 * (0.9461746957575601 * z2 - 0.3153915652525201),
            td * x,
            tc * c1,
            tb * c2,
            0.6258357354491763 * c3,
        ]
    return torch.stack(out, dim=-1)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluate SH colours [..., 3] from view directions [..., 3] (any length) and coefficients [..., K, 3]."""
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(
            f"sh_degree={degree} needs at least {k} SH coefficients per surfel, got colors with "
            f"{coeffs.shape[-2]}; lower sh_degree or pass more coefficients."
        )
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))
    return (basis[..., None] * coeffs[..., :k, :]).sum(-2)
