"""Compiled CPU compositor: the per-pixel loops of :mod:`.compositing`, written as Numba kernels.

The PyTorch compositor (``compositing.composite_tiles``) vectorises the sequential front-to-back blend over chunks of
list entries; that is portable but memory-bound, because every rule becomes a pass over ``[tiles, pixels, entries]``
work arrays. These kernels walk each pixel's depth-sorted list once, exactly like gsplat's CUDA kernels
(``rasterize_to_pixels_fwd_2dgs`` / ``bwd``): forward front to back with early termination, backward back to front
recovering the transmittance by division. They read the same packed table (:class:`.compositing.Col`) and tile bins,
so projection, colours and binning stay in PyTorch and the two compositors are interchangeable;
``tests/test_rasterize_cpu_kernels.py`` checks outputs and gradients against the PyTorch one.

Tiles are independent, so both kernels run ``prange`` over tiles. The backward writes one gradient row per
``(tile, list entry)`` overlap -- no two threads touch the same row -- and PyTorch sums the rows into the surfel
table afterwards, so results do not depend on the thread count.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numba
import numpy as np
import torch
from torch import Tensor

from .compositing import BlendSettings, Col, _scatter_to_grid
from .projection import ALPHA_MAX, ALPHA_THRESHOLD, FILTER_INV_SQUARE, TRANSMITTANCE_MIN
from .tiles import TileBins

_A, _B, _C, _REF, _MEAN2D = Col.A.start, Col.B.start, Col.C.start, Col.REF.start, Col.MEAN2D.start
_OPACITY, _ROW, _FEATS = Col.OPACITY, Col.ROW.start, Col.FEATS


if "NUMBA_THREADING_LAYER" not in os.environ:
    # Numba's OpenMP layer would run a second OpenMP runtime next to PyTorch's, and idle OpenMP workers spin: on a
    # 2-core machine the spinning workers of the two runtimes halve the speed of everything else. The workqueue
    # layer's idle workers sleep.
    numba.config.THREADING_LAYER = "workqueue"

_jit = numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)

_LAUNCH_LOCK = threading.Lock()
"""Serialises kernel launches: the viewer renders from its own thread while training runs, and Numba's workqueue
threading layer (chosen above) aborts on concurrent parallel launches. Taken only inside :func:`_launch`."""


def _launch(kernel, *args) -> None:
    """Run ``kernel(*args)`` under the launch lock with tracing off, so that no trace hook can raise between the
    lock's acquire and release.

    nerfstudio's viewer interrupts a render by raising from a ``sys.settrace`` hook at the next line event; one that
    fires on the line event a ``with`` block emits before calling ``__exit__`` skips the release, and every later
    render (and training, which shares the lock) would wait forever. Numba's own thread set-up takes locks in Python
    code too, so the whole launch runs untraced. Line events of this frame are switched off first: the only line an
    interrupt can still hit is the first one, before anything is held.
    """
    sys._getframe().f_trace_lines = False
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        with _LAUNCH_LOCK:
            numba.set_num_threads(_num_threads())
            kernel(*args)
    finally:
        sys.settrace(tracer)


@numba.njit(inline="always", error_model="numpy", cache=True)
def _pair(table, sid, px, py, intersection, dch, q_cut):
    """alpha, raw alpha, gauss, use3d, sx, sy, 1/cz, depth of one (pixel, surfel) pair; alpha is 0 without
    evaluating the exponential when ``q`` exceeds ``q_cut`` (the pair would fail the 1/255 test anyway)."""
    dx = px - table[sid, _REF]
    dy = py - table[sid, _REF + 1]
    cx = table[sid, _C] + dx * table[sid, _A] + dy * table[sid, _B]
    cy = table[sid, _C + 1] + dx * table[sid, _A + 1] + dy * table[sid, _B + 1]
    cz = table[sid, _C + 2] + dx * table[sid, _A + 2] + dy * table[sid, _B + 2]
    inv_cz = 1.0 / cz
    sx = cx * inv_cz
    sy = cy * inv_cz
    q3 = sx * sx + sy * sy
    if math.isnan(q3):  # c_z == 0: the ray misses the plane; the low-pass branch decides
        q3 = np.inf
    mx = table[sid, _MEAN2D] - px
    my = table[sid, _MEAN2D + 1] - py
    q2 = FILTER_INV_SQUARE * (mx * mx + my * my)
    use3d = q2 >= q3
    q = q3 if use3d else q2
    if q > q_cut:
        return 0.0, 0.0, 0.0, use3d, sx, sy, inv_cz, 0.0
    gauss = math.exp(-0.5 * q)
    raw = table[sid, _OPACITY] * gauss
    alpha = min(raw, ALPHA_MAX)
    if intersection:
        row2 = table[sid, _ROW + 2]
        depth = row2
        if use3d:
            plane = table[sid, _ROW] * sx + table[sid, _ROW + 1] * sy + row2
            if math.isfinite(plane - row2):
                depth = plane
    else:
        depth = table[sid, _FEATS + dch]
    return alpha, raw, gauss, use3d, sx, sy, inv_cz, depth

@numba.njit(inline="always", cache=True)
def _cutoffs(table, surfel_ids, start, count):
    """Per list entry, a ``q`` above which ``opacity * exp(-q / 2) < 1/255`` for sure (small safety margin)."""
    q_cut = np.empty(count)
    for k in range(count):
        scaled = 255.0 * table[surfel_ids[start + k], _OPACITY]
        q_cut[k] = 2.0 * math.log(scaled) * (1.0 + 1e-6) + 1e-6 if scaled > 1.0 else -1.0
    return q_cut


@numba.njit(inline="always", cache=True)
def _row_span(table, sid, py, q_cut, x_first, x_last):
    """Pixel columns of row ``py`` (within ``[x_first, x_last]``) that can pass ``q <= q_cut``: the inclusive range
    ``[i0, i1]`` (empty when ``i0 > i1``) minus the inclusive gap ``[g0, g1]`` (none when ``g0 > g1``).

    Along a row, ``c = b + dx a`` is affine in ``dx``, so ``q3 <= q_cut`` is the quadratic inequality
    ``f(dx) = qa dx^2 + 2 qb dx + qc <= 0`` (``|c_xy|^2 <= q_cut c_z^2``) and the low-pass ``q2 <= q_cut`` a circle
    chord. For a surfel in front of the camera ``qa > 0`` and the span is the hull of the root interval and the
    chord. A surfel that crosses the camera plane (grazing floors and walls) projects to a hyperbola: ``qa < 0``,
    ``f <= 0`` outside the roots, and the row is visited except the gap between them that the chord leaves
    uncovered -- on the dense benchmark rooms that gap held ~40% of all the pairs the kernels used to evaluate.
    Every bound is widened by a small margin (a conservative pre-test: :func:`_pair` still decides every pixel).
    """
    if q_cut < 0.0:
        return 1, 0, 1, 0
    rx, ry = table[sid, _REF], table[sid, _REF + 1]
    dy = py - ry
    bx = table[sid, _C] + dy * table[sid, _B]
    by = table[sid, _C + 1] + dy * table[sid, _B + 1]
    bz = table[sid, _C + 2] + dy * table[sid, _B + 2]
    ax, ay, az = table[sid, _A], table[sid, _A + 1], table[sid, _A + 2]
    qa = ax * ax + ay * ay - q_cut * az * az
    qb = ax * bx + ay * by - q_cut * az * bz
    qc = bx * bx + by * by - q_cut * bz * bz
    scale = ax * ax + ay * ay + q_cut * az * az
    lo, hi = np.inf, -np.inf
    gap_lo, gap_hi = np.inf, -np.inf  # open interval of dx inside which f > 0 (hyperbola case only)
    disc = qb * qb - qa * qc
    if qa > 1e-12 * scale:
        centre = -qb / qa
        half = math.sqrt(disc) / qa if disc > 0.0 else 0.0
        if disc > -1e-9 * qb * qb:  # a tangent row can round to a slightly negative discriminant
            lo, hi = centre - half, centre + half
    else:
        lo, hi = -np.inf, np.inf  # unbounded along this row (or nearly degenerate): the whole row...
        if qa < -1e-6 * scale and disc > 1e-9 * qb * qb:
            # ...except between the two roots (numerically stable form: r1 = qq / qa, r2 = qc / qq).
            qq = -(qb + math.copysign(math.sqrt(disc), qb))
            if qq != 0.0:
                r1, r2 = qq / qa, qc / qq
                margin = 0.05 + 1e-5 * (abs(r1) + abs(r2))
                gap_lo, gap_hi = min(r1, r2) + margin, max(r1, r2) - margin
    my = table[sid, _MEAN2D + 1] - py
    chord = q_cut / FILTER_INV_SQUARE - my * my
    if chord >= 0.0:
        mx = table[sid, _MEAN2D] - rx
        half2 = math.sqrt(chord)
        c_lo, c_hi = mx - half2, mx + half2
        lo, hi = min(lo, c_lo), max(hi, c_hi)
        if gap_lo < gap_hi:  # keep the larger part of the gap the chord leaves free
            c_margin = 0.05 + 1e-5 * (abs(c_lo) + abs(c_hi))
            c_lo, c_hi = c_lo - c_margin, c_hi + c_margin
            if c_hi > gap_lo and c_lo < gap_hi:
                if c_lo - gap_lo >= gap_hi - c_hi:
                    gap_hi = c_lo
                else:
                    gap_lo = c_hi
    if not lo <= hi:
        return 1, 0, 1, 0
    margin = 0.01 + 1e-6 * (abs(lo) + abs(hi))
    # Pixel i is at i + 0.5, i.e. dx = i + 0.5 - rx.
    first = x_first if lo == -np.inf else max(x_first, math.ceil(max(lo - margin + rx - 0.5, x_first - 1.0)))
    last = x_last if hi == np.inf else min(x_last, math.floor(min(hi + margin + rx - 0.5, x_last + 1.0)))
    g0, g1 = 1, 0
    if gap_lo < gap_hi:  # pixels strictly inside (gap_lo, gap_hi), clamped to the row
        g0 = max(first, math.floor(max(gap_lo + rx - 0.5, x_first - 2.0)) + 1)
        g1 = min(last, math.ceil(min(gap_hi + rx - 0.5, x_last + 2.0)) - 1)
    return first, last, g0, g1


@_jit
def _forward_kernel(table, order, starts, counts, surfel_ids, origins, rows, ts, width, height, intersection, dch,
                    threshold, feats, trans, acc_wd, distortion, median, median_pos, last):
    """Front-to-back blending, one tile row at a time: every entry updates the row's pixels it can reach, in list
    order, so each pixel sees exactly the sequence of a per-pixel loop (gsplat's order)."""
    n_feats = feats.shape[2]
    for j in numba.prange(order.shape[0]):
        t = order[j]
        start, count = starts[t], counts[t]
        q_cut = _cutoffs(table, surfel_ids, start, count)
        x0 = origins[t, 0]
        n_x = min(ts, width - x0)
        T = np.ones(n_x)
        u = np.zeros(n_x)
        dist = np.zeros(n_x)
        done = np.zeros(n_x, dtype=np.bool_)
        for r in range(min(ts, height - origins[t, 1])):
            y = origins[t, 1] + r
            py = y + 0.5
            T[:] = 1.0
            u[:] = 0.0
            dist[:] = 0.0
            done[:] = False
            for i in range(n_x):
                last[t, r * ts + i] = count
            n_done = 0
            for k in range(count):
                sid = surfel_ids[start + k]
                if y < rows[sid, 0] or y > rows[sid, 1]:  # outside the surfel's pixel box: no pair on this row
                    continue
                first, final, gap0, gap1 = _row_span(table, sid, py, q_cut[k], x0, x0 + n_x - 1)
                for ix in range(first, final + 1):
                    if gap0 <= ix <= gap1:
                        continue
                    i = ix - x0
                    if done[i]:
                        continue
                    alpha, _, _, _, _, _, _, depth = _pair(table, sid, ix + 0.5, py, intersection, dch, q_cut[k])
                    if alpha < threshold:
                        continue
                    p = r * ts + i
                    next_t = T[i] * (1.0 - alpha)
                    if next_t <= TRANSMITTANCE_MIN:
                        done[i] = True
                        last[t, p] = k
                        n_done += 1
                        continue
                    w = alpha * T[i]
                    for c in range(n_feats):
                        if intersection and c == dch:
                            feats[t, p, c] += w * depth
                        else:
                            feats[t, p, c] += w * table[sid, _FEATS + c]
                    dist[i] += 2.0 * (w * depth * (1.0 - T[i]) - w * u[i])
                    u[i] += w * depth
                    if T[i] > 0.5:
                        median[t, p] = depth
                        median_pos[t, p] = k
                    T[i] = next_t
                if n_done == n_x:
                    break
            for i in range(n_x):
                p = r * ts + i
                trans[t, p] = T[i]
                acc_wd[t, p] = u[i]
                distortion[t, p] = dist[i]


@_jit
def _backward_kernel(table, order, starts, surfel_ids, origins, rows, ts, width, height, intersection, dch, threshold,
                     g_feats, g_alpha, g_median, g_dist, trans, acc_wd, median_pos, last, use_dist, use_median,
                     grad_rows):
    """Back-to-front replay of :func:`_forward_kernel`, one tile row at a time, recovering each pixel's
    transmittance by division; one gradient row per (tile, list entry)."""
    n_feats = g_feats.shape[2]
    for j in numba.prange(order.shape[0]):
        t = order[j]
        start = starts[t]
        x0 = origins[t, 0]
        n_x = min(ts, width - x0)
        n_rows = min(ts, height - origins[t, 1])
        k_end = 0
        for r in range(n_rows):
            for i in range(n_x):
                k_end = max(k_end, last[t, r * ts + i])
        q_cut = _cutoffs(table, surfel_ids, start, k_end)
        T = np.empty(n_x)
        u = np.empty(n_x)
        suffix = np.empty(n_x)  # per pixel: sum over later entries of w_i dL/dw_i
        for r in range(n_rows):
            y = origins[t, 1] + r
            py = y + 0.5
            row_end = 0
            for i in range(n_x):
                p = r * ts + i
                T[i] = trans[t, p]
                u[i] = acc_wd[t, p]
                suffix[i] = 0.0
                row_end = max(row_end, last[t, p])
            for k in range(row_end - 1, -1, -1):
                sid = surfel_ids[start + k]
                if y < rows[sid, 0] or y > rows[sid, 1]:
                    continue
                first, final, gap0, gap1 = _row_span(table, sid, py, q_cut[k], x0, x0 + n_x - 1)
                for ix in range(first, final + 1):
                    if gap0 <= ix <= gap1:
                        continue
                    i = ix - x0
                    p = r * ts + i
                    if k >= last[t, p]:
                        continue
                    px = ix + 0.5
                    alpha, raw, gauss, use3d, sx, sy, inv_cz, depth = _pair(
                        table, sid, px, py, intersection, dch, q_cut[k]
                    )
                    if alpha < threshold:
                        continue
                    T[i] = T[i] / (1.0 - alpha)  # transmittance in front of entry k
                    w = alpha * T[i]
                    u[i] -= w * depth  # sum of w d in front of entry k
                    grad_w = g_alpha[t, p]
                    grad_depth = 0.0
                    for c in range(n_feats):
                        if intersection and c == dch:
                            grad_w += g_feats[t, p, c] * depth
                            grad_depth += w * g_feats[t, p, c]
                        else:
                            grad_w += g_feats[t, p, c] * table[sid, _FEATS + c]
                    if use_dist:
                        gd = g_dist[t, p]
                        front = 1.0 - T[i]
                        a_tot = 1.0 - trans[t, p]
                        wd_tot = acc_wd[t, p]
                        grad_w += gd * 2.0 * (2.0 * (depth * front - u[i]) + wd_tot - depth * a_tot)
                        grad_depth += gd * 2.0 * w * (2.0 * front + w - a_tot)
                    if use_median and k == median_pos[t, p]:
                        grad_depth += g_median[t, p]
                    grad_a = 0.0
                    if raw < ALPHA_MAX:
                        grad_a = T[i] * grad_w - suffix[i] / (1.0 - alpha)
                    suffix[i] += w * grad_w
                    _add_pair_gradient(grad_rows, start + k, table, sid, px, py, intersection, dch, g_feats[t, p],
                                       w, grad_a, grad_depth, raw, gauss, use3d, sx, sy, inv_cz)


@numba.njit(inline="always", cache=True, error_model="numpy")
def _add_pair_gradient(grad_rows, row, table, sid, px, py, intersection, dch, g_pixel, w, grad_a, grad_depth, raw,
                       gauss, use3d, sx, sy, inv_cz):
    """Chain one pair's ``dL/dalpha``, ``dL/ddepth`` and ``dL/dw`` back to its table row (opacity, ray-splat
    coefficients, low-pass centre, depth, features)."""
    grad_rows[row, _OPACITY] += grad_a * gauss
    grad_q = -0.5 * grad_a * raw
    g_sx = 0.0
    g_sy = 0.0
    if use3d:
        g_sx = 2.0 * sx * grad_q
        g_sy = 2.0 * sy * grad_q
    else:
        low_pass = 2.0 * FILTER_INV_SQUARE * grad_q
        grad_rows[row, _MEAN2D] += low_pass * (table[sid, _MEAN2D] - px)
        grad_rows[row, _MEAN2D + 1] += low_pass * (table[sid, _MEAN2D + 1] - py)
    if intersection:
        if use3d:
            g_sx += grad_depth * table[sid, _ROW]
            g_sy += grad_depth * table[sid, _ROW + 1]
            if math.isfinite(sx) and math.isfinite(sy):
                grad_rows[row, _ROW] += grad_depth * sx
                grad_rows[row, _ROW + 1] += grad_depth * sy
        grad_rows[row, _ROW + 2] += grad_depth
    else:
        grad_rows[row, _FEATS + dch] += grad_depth
    g_cx = g_sx * inv_cz
    g_cy = g_sy * inv_cz
    g_cz = -(g_sx * sx + g_sy * sy) * inv_cz
    if math.isfinite(g_cx) and math.isfinite(g_cy) and math.isfinite(g_cz):
        dx = px - table[sid, _REF]
        dy = py - table[sid, _REF + 1]
        grad_rows[row, _C] += g_cx
        grad_rows[row, _C + 1] += g_cy
        grad_rows[row, _C + 2] += g_cz
        grad_rows[row, _A] += dx * g_cx
        grad_rows[row, _A + 1] += dx * g_cy
        grad_rows[row, _A + 2] += dx * g_cz
        grad_rows[row, _B] += dy * g_cx
        grad_rows[row, _B + 1] += dy * g_cy
        grad_rows[row, _B + 2] += dy * g_cz
    for c in range(g_pixel.shape[0]):
        grad_rows[row, _FEATS + c] += g_pixel[c] * w


@numba.njit(cache=True, nogil=True)
def _scatter_add_rows(grad_table, surfel_ids, grad_rows):
    """``grad_table[surfel_ids[i]] += grad_rows[i]`` in list order (serial: rows of one surfel collide)."""
    for i in range(surfel_ids.shape[0]):
        sid = surfel_ids[i]
        for c in range(grad_rows.shape[1]):
            grad_table[sid, c] += grad_rows[i, c]


def _threshold(dtype: torch.dtype) -> float:
    """``alpha < threshold`` skips a pair; the float32 value of 1/255 when compositing in float32 (as gsplat)."""
    return float(torch.tensor(ALPHA_THRESHOLD, dtype=dtype))


def _tile_order(n_tiles: int, n_threads: int) -> np.ndarray:
    """Interleave the tiles (sorted longest list first) so Numba's contiguous per-thread blocks get equal work."""
    n_threads = max(1, n_threads)
    return np.concatenate([np.arange(i, n_tiles, n_threads) for i in range(n_threads)]).astype(np.int64)


def _num_threads() -> int:
    """Threads the kernels run on: PyTorch's setting, within what Numba started."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _bins_arrays(bins: TileBins) -> tuple[np.ndarray, ...]:
    return (bins.starts.numpy(), bins.counts.numpy(), bins.surfel_ids.numpy(), bins.origins.numpy(),
            bins.rows.numpy())


class _CompositeTilesCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: Tensor, bins: TileBins, settings: BlendSettings):
        table = table.detach().contiguous()
        n_t, P = bins.tile_ids.numel(), bins.tile_size**2
        feats = table.new_zeros(n_t, P, table.shape[1] - Col.FEATS)
        trans, acc_wd = table.new_ones(n_t, P), table.new_zeros(n_t, P)
        distortion, median = table.new_zeros(n_t, P), table.new_zeros(n_t, P)
        median_pos = torch.full((n_t, P), -1, dtype=torch.int64)
        last = torch.zeros((n_t, P), dtype=torch.int64)  # list position where each pixel stopped (exclusive)
        outputs = (feats, trans, acc_wd, distortion, median, median_pos, last)
        order = _tile_order(n_t, _num_threads())
        _launch(
            _forward_kernel, table.numpy(), order, *_bins_arrays(bins), bins.tile_size, settings.width,
            settings.height, settings.intersection_depth, settings.depth_channel, _threshold(table.dtype),
            *(t.numpy() for t in outputs),
        )
        ctx.save_for_backward(table, trans, acc_wd, median_pos, last)
        ctx.bins, ctx.settings, ctx.order = bins, settings, order
        return feats, 1.0 - trans, median, distortion

    @staticmethod
    def backward(ctx, g_feats, g_alpha, g_median, g_dist):
        table, trans, acc_wd, median_pos, last = ctx.saved_tensors
        bins, s = ctx.bins, ctx.settings
        grads = tuple(g.to(table.dtype).contiguous() for g in (g_feats, g_alpha, g_median, g_dist))
        grad_rows = table.new_zeros(bins.n_overlaps, table.shape[1])
        starts, _, surfel_ids, origins, rows = _bins_arrays(bins)
        _launch(
            _backward_kernel, table.numpy(), ctx.order, starts, surfel_ids, origins, rows, bins.tile_size, s.width,
            s.height, s.intersection_depth, s.depth_channel, _threshold(table.dtype), *(g.numpy() for g in grads),
            trans.numpy(), acc_wd.numpy(), median_pos.numpy(), last.numpy(), bool(grads[3].any()),
            bool(grads[2].any()), grad_rows.numpy(),
        )
        grad_table = torch.zeros_like(table)
        _scatter_add_rows(grad_table.numpy(), surfel_ids, grad_rows.numpy())
        return grad_table, None, None


def composite_tiles_cpu(table: Tensor, bins: TileBins, settings: BlendSettings):
    """Drop-in for :func:`.compositing.composite_tiles` on CPU tensors, compiled with Numba (same outputs)."""
    if table.device.type != "cpu":
        raise ValueError(f"the compiled CPU compositor needs CPU tensors, got {table.device}; use the torch one.")
    return _scatter_to_grid(bins, *_CompositeTilesCPU.apply(table, bins, settings))
