"""Parity of the PyTorch backend with gsplat 1.4.0's CUDA 2DGS kernels (skipped without CUDA).

Identical float32 inputs go through both backends on the GPU. Forward fields must agree within 1e-3 (absolute).
Gradients are compared relative to their largest magnitude (tolerance 2e-2): gsplat accumulates them with float32
atomics in nondeterministic order, and its gradient of the screen-space box centre (used only by the low-pass
fallback) is an approximation, so exact agreement is not expected; surfels here are large enough that the fallback
is rarely used. The densification handle (``means2d.grad``) is written racily by gsplat (last writer wins), so it is
only checked for direction.
"""

from __future__ import annotations

import math

import pytest
import torch

from genfusion_ns.rasterize import rasterize_surfels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat parity needs a CUDA GPU"),
]

FIELDS = ("rgb", "alpha", "depth_expected", "depth_median", "normals", "distortion", "surf_normals")
PARAMS = ("means", "quats", "scales", "opacities", "colors")


def _scene(n: int, width: int, height: int, cameras: int, seed: int, sh_degree: int | None):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.5, 1.0, 1.0])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.08 + 0.15 * torch.rand(n, 3, generator=g)
    opac = 0.2 + 0.75 * torch.rand(n, generator=g)
    colors = torch.randn(n, 16, 3, generator=g) * 0.3 if sh_degree is not None else torch.rand(n, 3, generator=g)
    viewmats = []
    for c in range(cameras):
        ang = 0.3 * c
        R = torch.tensor([[math.cos(ang), 0, -math.sin(ang)], [0, 1, 0], [math.sin(ang), 0, math.cos(ang)]])
        V = torch.eye(4)
        V[:3, :3] = R
        V[:3, 3] = torch.tensor([0.1 * c, -0.05, 3.5])
        viewmats.append(V)
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return {"means": means, "quats": quats, "scales": scales, "opacities": opac, "colors": colors,
                "viewmats": torch.stack(viewmats), "Ks": K.expand(cameras, 3, 3).clone(), "width": width, "height": height}


def _render(scene, backend, sh_degree, bg):
    params = {k: scene[k].cuda().requires_grad_(True) for k in PARAMS}
    rest = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in scene.items() if k not in PARAMS}
    out = rasterize_surfels(**params, **rest, backgrounds=bg, sh_degree=sh_degree, backend=backend)
    out.means2d.retain_grad()
    g = torch.Generator(device="cuda").manual_seed(1)
    loss = sum((getattr(out, f) * torch.rand(getattr(out, f).shape, generator=g, device="cuda")).sum()
               for f in FIELDS if f != "surf_normals")
    loss.backward()
    return out, {k: p.grad for k, p in params.items()}


@pytest.mark.parametrize("sh_degree,cameras", [(None, 1), (3, 2)])
def test_torch_backend_matches_gsplat(sh_degree, cameras):
    scene = _scene(300, 80, 64, cameras, seed=0, sh_degree=sh_degree)
    bg = torch.rand(cameras, 3, device="cuda")
    out_g, grads_g = _render(scene, "gsplat", sh_degree, bg)
    out_t, grads_t = _render(scene, "torch", sh_degree, bg)
    assert out_g.backend == "gsplat" and out_t.backend == "torch"
    assert out_g.alpha.max() > 0.9 and out_g.alpha.min() < 0.1  # non-trivial coverage
    assert torch.equal(out_g.radii.cpu(), out_t.radii.cpu())
    # Normalised depth divides by alpha, and depth normals difference neighbouring depths: compare them where the
    # pixel (resp. its 3x3 neighbourhood) is well covered, everything else everywhere.
    alpha = out_g.alpha[..., 0]
    covered = {
        "depth_expected": alpha > 0.05,
        "surf_normals": -torch.nn.functional.max_pool2d(-alpha[:, None], 3, 1, 1)[:, 0] > 0.5,
    }
    for f in FIELDS:
        a, b = getattr(out_g, f), getattr(out_t, f)
        if f in covered:
            a, b = a[covered[f]], b[covered[f]]
        torch.testing.assert_close(b, a, atol=1e-3, rtol=0, msg=lambda m, f=f: f"{f} differs between backends: {m}")
    for k in PARAMS:
        a, b = grads_g[k], grads_t[k]
        scale = a.abs().max().clamp_min(1e-8)
        err = (a - b).abs().max() / scale
        assert err < 2e-2, f"gradient of {k}: max error {err:.3g} of its largest magnitude"
    ga, gb = out_g.means2d.grad, out_t.means2d.grad
    vis = out_g.radii > 0
    cos = torch.nn.functional.cosine_similarity(ga[vis].flatten(), gb[vis].flatten(), dim=0)
    assert cos > 0.9, f"densification gradients point in different directions (cosine {cos:.3f})"
