"""The compiled CPU compositor (``backend="cpu"``) against the independent brute-force renderer and the PyTorch one.

The PyTorch backend's gradients are themselves checked against autograd and finite differences in
``test_rasterize_torch.py`` (whose finite-difference check also runs on this backend); here the Numba kernels must
reproduce its outputs and gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rasterize_torch import _grads_finite, _np, brute_force_render, random_scene

from genfusion_ns.rasterize import rasterize_surfels, resolve_backend
from genfusion_ns.rasterize.torch_backend import rasterize_torch

pytest.importorskip("numba")

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def _render_and_grads(scene, backend, depth_mode, cotangent_seed=5, **kwargs):
    params = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    bg = torch.tensor([[0.3, 0.1, 0.7], [0.0, 1.0, 0.5]], dtype=scene["means"].dtype)[: scene["viewmats"].shape[0]]
    out = rasterize_surfels(**{**scene, **params}, backgrounds=bg, backend=backend, depth_mode=depth_mode, **kwargs)
    fields = [out.rgb, out.alpha, out.depth_expected, out.depth_median, out.normals, out.distortion]
    g = torch.Generator().manual_seed(cotangent_seed)
    cot = [torch.randn(f.shape, generator=g, dtype=f.dtype) for f in fields]
    out.means2d.retain_grad()
    loss = sum((f * c).sum() for f, c in zip(fields, cot))
    grads = torch.autograd.grad(loss, list(params.values()) + [out.means2d])
    return out, dict(zip(list(PARAMS) + ["means2d"], grads))


@pytest.mark.parametrize("depth_mode", ["center", "intersection"])
@pytest.mark.parametrize("tile_size", [2, 4, 16])
def test_matches_brute_force(depth_mode, tile_size):
    scene = random_scene(seed=1 if depth_mode == "center" else 2)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    out = rasterize_torch(**scene, backgrounds=bg, depth_mode=depth_mode, tile_size=tile_size, compositor="numba")
    ref = brute_force_render(*(_np(scene[k]) for k in PARAMS + ("viewmats", "Ks")), scene["width"],
                             scene["height"], backgrounds=_np(bg), depth_mode=depth_mode)
    assert ref["alpha"].max() > 0.5
    np.testing.assert_allclose(_np(out.rgb), ref["rgb"], atol=1e-7)
    np.testing.assert_allclose(_np(out.alpha), ref["alpha"], atol=1e-7)
    np.testing.assert_allclose(_np(out.depth_accumulated), ref["depth_acc"], atol=1e-6)
    np.testing.assert_allclose(_np(out.depth_median), ref["median"], atol=1e-6)
    np.testing.assert_allclose(_np(out.distortion), ref["dist"], atol=1e-6)


@pytest.mark.parametrize("depth_mode", ["center", "intersection"])
def test_outputs_and_gradients_match_the_torch_compositor(depth_mode):
    scene = random_scene(n=60, width=23, height=17, seed=21)
    out_t, grads_t = _render_and_grads(scene, "torch", depth_mode)
    out_c, grads_c = _render_and_grads(scene, "cpu", depth_mode)
    assert out_c.backend == "cpu" and out_t.backend == "torch"
    for name in ("rgb", "alpha", "depth_expected", "depth_median", "normals", "surf_normals", "distortion"):
        torch.testing.assert_close(getattr(out_c, name), getattr(out_t, name), rtol=1e-9, atol=1e-10, msg=name)
    for name, grad in grads_t.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-8, atol=1e-9, msg=f"gradient of {name}")


def test_float32_matches_the_torch_compositor():
    scene = random_scene(n=80, width=30, height=24, seed=22, dtype=torch.float32)
    out_t, grads_t = _render_and_grads(scene, "torch", "center")
    out_c, grads_c = _render_and_grads(scene, "cpu", "center")
    torch.testing.assert_close(out_c.rgb, out_t.rgb, rtol=1e-4, atol=1e-5)
    for name, grad in grads_t.items():
        rel = (grads_c[name] - grad).norm() / grad.norm()
        assert rel < 1e-4, (name, float(rel))


def test_compositor_results_do_not_depend_on_the_thread_count():
    """Each thread owns whole tiles and its own gradient rows, so 1 and 2 threads give bit-identical results."""
    from genfusion_ns.rasterize.compositing import BlendSettings
    from genfusion_ns.rasterize.cpu_kernels import composite_tiles_cpu
    from genfusion_ns.rasterize.projection import project_surfels
    from genfusion_ns.rasterize.tiles import bin_surfels
    from genfusion_ns.rasterize.torch_backend import build_table

    scene = random_scene(n=120, width=40, height=32, seed=23, dtype=torch.float32)
    proj = project_surfels(scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"],
                           scene["width"], scene["height"], 0.01, 1e10, 0.0)
    feats = torch.cat([scene["colors"].expand(2, -1, -1), proj.depths[..., None]], -1)
    table = build_table(proj.ray_transforms, proj, scene["opacities"], feats, scene["width"], scene["height"])
    table = table.detach().requires_grad_(True)
    bins = bin_surfels(proj, scene["opacities"], scene["width"], scene["height"], tile_size=4)
    settings = BlendSettings(scene["width"], scene["height"], False, 3)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs = composite_tiles_cpu(table, bins, settings)
            loss = sum((o * (i + 1.0)).sum() for i, o in enumerate(outputs))
            results.append((outputs, torch.autograd.grad(loss, table)[0]))
    finally:
        torch.set_num_threads(before)
    (out_1, grad_1), (out_2, grad_2) = results
    assert out_1[1].max() > 0.5 and grad_1.abs().max() > 0
    assert all(torch.equal(a, b) for a, b in zip(out_1, out_2))
    assert torch.equal(grad_1, grad_2)


def test_edge_cases_stay_finite():
    empty = random_scene(n=0, cameras=2)
    out = rasterize_surfels(**empty, backend="cpu")
    assert out.rgb.shape == (2, 14, 20, 3) and out.alpha.abs().max() == 0

    behind = random_scene(n=5, cameras=1, seed=9)
    behind["means"] = behind["means"] - torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64)
    params = [behind[k].requires_grad_(True) for k in ("means", "opacities", "colors")]
    out = rasterize_surfels(**behind, backend="cpu")
    assert out.alpha.abs().max() == 0 and _grads_finite(out, params)

    tiny = random_scene(n=6, width=1, height=1, cameras=2, seed=10, scale=(0.5, 0.8))
    out = rasterize_surfels(**tiny, backend="cpu")
    ref = brute_force_render(*(_np(tiny[k]) for k in PARAMS + ("viewmats", "Ks")), 1, 1)
    assert ref["alpha"].max() > 0.1
    np.testing.assert_allclose(_np(out.rgb), ref["rgb"], atol=1e-6)

    degenerate = random_scene(n=3, cameras=1, seed=11)
    degenerate["scales"] = torch.tensor([[0.2, 0.0, 0.1], [0.0, 0.0, 0.0], [0.3, 0.3, 0.1]], dtype=torch.float64)
    params = [degenerate[k].requires_grad_(True) for k in ("means", "quats", "scales", "opacities")]
    out = rasterize_surfels(**degenerate, backend="cpu", depth_mode="intersection")
    assert all(torch.isfinite(f).all() for f in (out.rgb, out.depth_expected, out.distortion))
    assert _grads_finite(out, params)


def test_row_pretest_never_skips_a_shading_pixel_and_skips_the_hyperbola_gap():
    """The kernels' per-row pre-test (span minus gap) against the exact per-pair test on every pixel of wide rows.

    Random affine coefficients with a large ``A_z`` give surfels that cross the camera plane (``qa < 0``): their
    rows pass outside two roots, and the gap between them must be skipped without ever hiding a shading pixel.
    """
    from genfusion_ns.rasterize.compositing import Col
    from genfusion_ns.rasterize.cpu_kernels import _cutoffs, _pair, _row_span

    rng = np.random.default_rng(3)
    n = 60
    table = np.zeros((n, Col.FEATS + 1))
    a_z_scale = rng.choice([0.05, 1.0, 3.0], size=n)
    table[:, Col.A] = rng.normal(size=(n, 3)) * np.stack([np.ones(n), np.ones(n), a_z_scale], 1)
    table[:, Col.B] = rng.normal(size=(n, 3))
    table[:, Col.C] = rng.normal(size=(n, 3)) * 4.0
    table[:, Col.REF] = rng.uniform(-5.0, 5.0, size=(n, 2))
    table[:, Col.MEAN2D] = table[:, Col.REF] + rng.normal(size=(n, 2)) * 3.0
    table[:, Col.OPACITY] = rng.uniform(0.02, 1.0, size=n)
    ids = np.arange(n)
    q_cut = _cutoffs(table, ids, 0, n)
    x_first, x_last = -60, 60
    gaps = skipped = shading = 0
    for sid in range(n):
        for y in range(-12, 13):
            py = y + 0.5
            first, last, g0, g1 = _row_span(table, sid, py, q_cut[sid], x_first, x_last)
            gaps += g0 <= g1
            for ix in range(x_first, x_last + 1):
                alpha = _pair(table, sid, ix + 0.5, py, False, 0, q_cut[sid])[0]
                visited = first <= ix <= last and not g0 <= ix <= g1
                skipped += g0 <= ix <= g1
                if alpha >= 1.0 / 255.0:
                    shading += 1
                    assert visited, (sid, y, ix, first, last, g0, g1)
    assert shading > 1000 and gaps > 50 and skipped > 1000, (shading, gaps, skipped)


def test_backend_selection():
    assert resolve_backend("auto", torch.device("cpu"), "center") == "cpu"
    assert resolve_backend("auto", torch.device("cpu"), "intersection") == "cpu"
    assert resolve_backend("torch", torch.device("cpu"), "center") == "torch"
    with pytest.raises(ValueError, match="needs CPU tensors"):
        resolve_backend("cpu", torch.device("cuda"), "center")
    scene = random_scene(n=4, cameras=1)
    assert rasterize_surfels(**scene).backend == "cpu"
