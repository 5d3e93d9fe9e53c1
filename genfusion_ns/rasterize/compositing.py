"""Front-to-back 2DGS compositing over tile-binned surfel lists, with a hand-written backward.

Per-pair rules are gsplat 1.4.0's (``rasterize_to_pixels_fwd_2dgs``): ray-splat weight ``q3 = u^2 + v^2`` with the
low-pass fallback ``q2 = 2 |p - mean2d|^2``, ``alpha = min(0.999, o exp(-min(q3, q2) / 2))``, pairs with
``alpha < 1/255`` are skipped, and a pixel stops (excluding that splat) once transmittance would fall to ``<= 1e-4``.

Layout: the depth-sorted list of every tile is walked in *chunks* of list positions. One chunk is a dense
``[active tiles, tile pixels, chunk entries]`` problem, small enough to stay in cache; inside it the sequential
rules become masks over cumulative products. Transmittance, accumulated depth and the "done" flag are carried
from chunk to chunk, and tiles whose pixels are all done leave the active set (gsplat's early exit), so work
follows the pairs that actually shade, not pixels x surfels.

The backward (``_CompositeTiles.backward``) walks the chunks back to front, reusing the forward's work arrays while
they fit ``BlendSettings.cache_bytes`` and otherwise recomputing them from the small per-chunk carry state, using ``dL/dalpha_k = T_k G_k - (sum_{i>k} w_i G_i) / (1 - alpha_k)`` where ``G_i = dL/dw_i``.
:func:`composite_reference` runs the same forward under autograd; tests check the two against each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .projection import ALPHA_MAX, ALPHA_THRESHOLD, FILTER_INV_SQUARE, TRANSMITTANCE_MIN
from .tiles import TileBins


class Col:
    """Column layout of the packed per-(camera, surfel) table the compositor gathers from (one gather per chunk).

    ``A, B, C`` are the affine cross-product coefficients ``c(x, y) = (x - rx) A + (y - ry) B + C`` re-centred on a
    reference point ``REF`` (the surfel's clamped screen centre) so float32 keeps the precision the cancellation
    in ``c`` needs; ``ROW`` is the ray transform's third row (plane depth, intersection mode); ``FEATS`` are the
    blended channels, whose column ``depth_channel`` holds the centre depth (zeros in intersection mode).
    """

    A = slice(0, 3)
    B = slice(3, 6)
    C = slice(6, 9)
    REF = slice(9, 11)
    MEAN2D = slice(11, 13)
    OPACITY = 13
    ROW = slice(14, 17)
    FEATS = 17


@dataclass(frozen=True)
class BlendSettings:
    """Image size, depth definition and the compositor's speed / memory knobs (results do not depend on those)."""

    width: int
    height: int
    intersection_depth: bool
    depth_channel: int
    chunk_size: int = 16
    max_chunk_size: int = 128
    # Upper bound on (pixel, entry) pairs per chunk: keeps work arrays cache-sized and peak memory bounded.
    max_chunk_pairs: int = 2**18
    # The forward keeps per-pair work arrays for the backward up to this many bytes, then recomputes the rest.
    cache_bytes: int = 256 * 2**20


@lru_cache(maxsize=16)
def _tile_pixels(tile_size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """1-D tile-local pixel centres ``[ts]`` (``i + 0.5``) and the integer x / y offset ``[P]`` of each tile pixel
    (row-major, ``P = ts * ts``)."""
    centres = torch.arange(tile_size, dtype=dtype, device=device) + 0.5
    ix = torch.arange(tile_size, device=device).repeat(tile_size)
    iy = torch.arange(tile_size, device=device).repeat_interleave(tile_size)
    return centres, ix, iy


def _chunk_sizes(settings: BlendSettings):
    size = settings.chunk_size
    while True:
        yield size
        size = min(2 * size, settings.max_chunk_size)


# ---------------------------------------------------------------------------------------------------- per chunk


@dataclass
class _Pairs:
    """Per (tile, pixel, entry) quantities that do not depend on transmittance.

    Masks are kept as float arithmetic (threshold / sign) rather than boolean tensors and ``where``: on CPU the
    latter are several times slower than plain float ops, and this is the hot loop.
    """

    alpha: Tensor  # [G, P, K] capped alpha, 0 where the pair is skipped (alpha < 1/255)
    raw_alpha: Tensor  # o * exp(-q/2) before the cap
    gauss: Tensor  # exp(-q/2)
    q2_minus_q3: Tensor  # > 0 (or == 0) where the ray-splat branch is used, else the low-pass branch
    sx: Tensor
    sy: Tensor
    inv_cz: Tensor
    dx: Tensor  # [G, ts, K] mean2d.x - pixel centre x, per pixel column
    dy: Tensor  # [G, ts, K]
    depth: Tensor  # [G, P, K] or [G, 1, K]
    entries: Tensor  # [G, K, D] gathered table rows
    offsets: Tensor  # [G, K, 2] tile origin - reference point


@lru_cache(maxsize=8)
def _below_threshold(dtype: torch.dtype) -> float:
    """Largest value < 1/255 in ``dtype``: ``threshold(alpha, it, 0)`` keeps exactly ``alpha >= 1/255``."""
    t = torch.tensor(ALPHA_THRESHOLD, dtype=dtype)
    return float(torch.nextafter(t, torch.zeros_like(t)))


def _pairs(table: Tensor, ids: Tensor, origins: Tensor, tile_size: int, s: BlendSettings) -> _Pairs:
    G, K = ids.shape
    ts = tile_size
    dtype = table.dtype
    centres, _, _ = _tile_pixels(ts, dtype, ids.device)
    e = table.index_select(0, ids.reshape(-1)).view(G, K, -1)

    # c = x_l A + y_l B + (C + off_x A + off_y B) with tile-local pixel centres, evaluated separably:
    # [G, ts(x), 3, K] column part + [G, ts(y), 3, K] row part, broadcast over the tile.
    off = origins.to(dtype)[:, None, :] - e[..., Col.REF]
    local_c = e[..., Col.C] + off[..., 0:1] * e[..., Col.A] + off[..., 1:2] * e[..., Col.B]  # [G, K, 3]
    col_part = local_c.transpose(1, 2)[:, None] + centres[None, :, None, None] * e[..., Col.A].transpose(1, 2)[:, None]
    row_part = centres[None, :, None, None] * e[..., Col.B].transpose(1, 2)[:, None]
    cross = (row_part[:, :, None] + col_part[:, None]).view(G, ts * ts, 3, K)
    cx, cy, cz = cross.unbind(2)
    inv_cz = cz.reciprocal()
    sx = cx * inv_cz
    sy = cy * inv_cz
    q3 = sx * sx
    q3.addcmul_(sy, sy)
    q3 = torch.nan_to_num(q3, nan=float("inf"))  # c_z == 0: the ray misses the plane; low-pass branch decides

    m2 = (e[..., Col.MEAN2D] - origins.to(dtype)[:, None, :]).transpose(1, 2)  # [G, 2, K] tile coordinates
    dx = m2[:, None, 0] - centres[None, :, None]  # [G, ts, K]
    dy = m2[:, None, 1] - centres[None, :, None]
    q2 = (dy.square()[:, :, None] + dx.square()[:, None]).mul_(FILTER_INV_SQUARE).view(G, ts * ts, K)

    gauss = torch.minimum(q3, q2).mul_(-0.5).exp_()
    raw_alpha = e[:, None, :, Col.OPACITY] * gauss
    alpha = torch.threshold(raw_alpha.clamp_max(ALPHA_MAX), _below_threshold(dtype), 0.0)

    if s.intersection_depth:
        row = e[:, None, :, Col.ROW]  # [G, 1, K, 3]
        plane = row[..., 0] * sx + row[..., 1] * sy + row[..., 2]
        use3d = _step(q2 - q3)
        depth = row[..., 2] + use3d * torch.nan_to_num(plane - row[..., 2], nan=0.0, posinf=0.0, neginf=0.0)
    else:
        depth = e[:, None, :, Col.FEATS + s.depth_channel]
    return _Pairs(alpha, raw_alpha, gauss, q2 - q3, sx, sy, inv_cz, dx, dy, depth, e, off)


def _step(x: Tensor) -> Tensor:
    """1.0 where x >= 0, else 0.0 (float mask)."""
    return torch.sign(x).add_(1.0).clamp_max_(1.0)


@dataclass
class _Blend:
    alpha: Tensor  # [G, P, K] kept alphas (0 = not shaded)
    t_excl: Tensor  # [G, P, K] transmittance in front of each entry
    weights: Tensor  # [G, P, K]
    wd: Tensor  # weights * depth
    t_out: Tensor  # [G, P]
    stopped: Tensor  # [G, P] bool: the pixel hit the transmittance floor in this chunk


def _transmittance(alpha: Tensor, t_in: Tensor) -> Tensor:
    """``[G, P, K + 1]``: column k is ``t_in prod_{i<k} (1 - alpha_i)`` (the last is after the chunk)."""
    return torch.cumprod(torch.cat([t_in[..., None], 1.0 - alpha], dim=-1), dim=-1)


def _blend(p: _Pairs, t_in: Tensor) -> _Blend:
    """Front-to-back blending of one chunk. Pixels already done enter with ``t_in = 0`` so they get no weight."""
    t_all = _transmittance(p.alpha, t_in)
    stopped = (t_all[..., -1] <= TRANSMITTANCE_MIN) & (t_in > 0)
    alpha = p.alpha
    if bool(stopped.any()):
        # Transmittance never rises, so the splats in front of the first one that reaches the floor are exactly
        # those with T after them > floor; that splat and everything behind it are dropped.
        alpha = alpha * torch.sign(t_all[..., 1:] - TRANSMITTANCE_MIN).clamp_min_(0.0)
        t_all = _transmittance(alpha, t_in)
    t_excl = t_all[..., :-1]
    w = alpha * t_excl
    return _Blend(alpha, t_excl, w, w * p.depth, t_all[..., -1], stopped)


def _weighted_sum(weights: Tensor, feats: Tensor) -> Tensor:
    """``[G, P, K] x [G, K, F] -> [G, P, F]``, computed as ``(feats^T weights^T)^T``: with few channels the
    transposed product is ~3x faster on CPU (same result)."""
    return torch.matmul(feats.transpose(1, 2), weights.transpose(1, 2)).transpose(1, 2)


def _median_last(b: _Blend) -> Tensor:
    """Chunk-local index of the last shaded entry with incoming transmittance > 0.5, -1 if none."""
    K = b.weights.shape[-1]
    rank = torch.arange(1, K + 1, device=b.weights.device, dtype=b.weights.dtype)
    shaded_front = torch.sign(b.alpha * torch.relu(b.t_excl - 0.5))
    return (shaded_front * rank).amax(-1).long() - 1


# ------------------------------------------------------------------------------------------------ whole lists


@dataclass
class _ChunkRecord:
    active: Tensor  # [G] positions in the bins' tile order
    start: int
    size: int
    t_in: Tensor  # [G, P] incoming transmittance, 0 for pixels already done
    u_in: Tensor  # [G, P]
    cached: tuple[_Pairs, _Blend] | None = None  # forward work arrays, if they fit the cache budget


@dataclass
class _PixelState:
    feats: Tensor  # [T, P, F]
    trans: Tensor  # [T, P]
    acc_wd: Tensor  # [T, P]
    distortion: Tensor  # [T, P]
    median: Tensor  # [T, P]
    median_pos: Tensor  # [T, P] int64 list position of the median entry, -1 if none
    done: Tensor  # [T, P] bool


def _chunk_ids(bins: TileBins, active: Tensor, start: int, size: int) -> Tensor:
    pos = start + torch.arange(size, device=active.device)
    counts = bins.counts[active]
    src = (bins.starts[active][:, None] + pos[None]).clamp_max(max(bins.n_overlaps - 1, 0))
    ids = bins.surfel_ids[src]
    return ids.masked_fill_(pos[None] >= counts[:, None], bins.pad_id)


def _run_forward(
    table: Tensor, bins: TileBins, s: BlendSettings, cache_bytes: int = 0
) -> tuple[_PixelState, list[_ChunkRecord]]:
    ts = bins.tile_size
    n_t, P, F = bins.tile_ids.numel(), ts * ts, table.shape[-1] - Col.FEATS
    _, ix, iy = _tile_pixels(ts, table.dtype, table.device)
    outside = ((bins.origins[:, 0:1] + ix) >= s.width) | ((bins.origins[:, 1:2] + iy) >= s.height)
    st = _PixelState(
        feats=table.new_zeros(n_t, P, F), trans=table.new_ones(n_t, P), acc_wd=table.new_zeros(n_t, P),
        distortion=table.new_zeros(n_t, P), median=table.new_zeros(n_t, P),
        median_pos=torch.full((n_t, P), -1, dtype=torch.int64, device=table.device), done=outside,
    )
    records: list[_ChunkRecord] = []
    cache_left = cache_bytes
    active = torch.arange(n_t, device=table.device)
    start = 0
    sizes = _chunk_sizes(s)
    dch = s.depth_channel
    while active.numel() > 0:
        size = max(1, min(next(sizes), s.max_chunk_pairs // (active.numel() * P)))
        done_in, u_in = st.done[active], st.acc_wd[active]
        t_true = st.trans[active]
        t_in = t_true.masked_fill(done_in, 0.0)  # finished pixels take no more weight
        ids = _chunk_ids(bins, active, start, size)
        p = _pairs(table, ids, bins.origins[active], ts, s)
        b = _blend(p, t_in)
        cost = 12 * b.weights.numel() * b.weights.element_size()
        cached = (p, b) if cost <= cache_left else None
        cache_left -= cost if cached is not None else 0
        records.append(_ChunkRecord(active, start, size, t_in, u_in, cached))

        add = _weighted_sum(b.weights, p.entries[..., Col.FEATS :])
        wd_sum = b.wd.sum(-1)
        if s.intersection_depth:
            add = torch.cat([add[..., :dch], wd_sum[..., None], add[..., dch + 1 :]], dim=-1)
        st.feats = st.feats.index_add(0, active, add)
        # Distortion: sum_i 2 w_i (d_i (1 - T_i) - sum_{j<i} w_j d_j).
        u_excl = torch.cumsum(b.wd, -1) - b.wd + u_in[..., None]
        dist = 2.0 * (b.wd * (1.0 - b.t_excl) - b.weights * u_excl).sum(-1)
        st.distortion = st.distortion.index_add(0, active, dist)
        st.acc_wd = st.acc_wd.index_copy(0, active, u_in + wd_sum)
        last = _median_last(b)
        has = last >= 0
        med = torch.gather(p.depth.expand_as(b.weights), -1, last.clamp_min(0)[..., None])[..., 0]
        st.median = st.median.index_copy(0, active, torch.where(has, med, st.median[active]))
        st.median_pos = st.median_pos.index_copy(0, active, torch.where(has, last + start, st.median_pos[active]))
        st.trans = st.trans.index_copy(0, active, torch.where(done_in, t_true, b.t_out))
        done = done_in | b.stopped
        st.done = st.done.index_copy(0, active, done)

        start += size
        alive = (bins.counts[active] > start) & ~done.all(-1)
        active = active[alive]
    return st, records


class _CompositeTiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, bins, settings, will_backward):
        st, records = _run_forward(table, bins, settings, settings.cache_bytes if will_backward else 0)
        ctx.save_for_backward(table)
        ctx.bins, ctx.settings, ctx.records = bins, settings, records
        ctx.final = (st.trans, st.acc_wd, st.median_pos)
        return st.feats, 1.0 - st.trans, st.median, st.distortion

    @staticmethod
    def backward(ctx, g_feats, g_alpha, g_median, g_dist):
        (table,) = ctx.saved_tensors
        bins, s = ctx.bins, ctx.settings
        trans, acc_wd, median_pos = ctx.final
        use = _UsedGrads(bool(g_median.any()), bool(g_dist.any()))
        # One gather per chunk: [T, P, F + 5] = feats grads, alpha, median and distortion grads, alpha, sum w d.
        per_pixel = torch.cat([g_feats, g_alpha[..., None], g_median[..., None], g_dist[..., None],
                               (1.0 - trans)[..., None], acc_wd[..., None]], dim=-1)
        grad_table = torch.zeros_like(table)
        suffix = torch.zeros_like(trans)
        for rec in reversed(ctx.records):
            a = rec.active
            ids = _chunk_ids(bins, a, rec.start, rec.size)
            if rec.cached is not None:
                p, b = rec.cached
                rec.cached = None
            else:
                p = _pairs(table, ids, bins.origins[a], bins.tile_size, s)
                b = _blend(p, rec.t_in)
            entry_grad, chunk_sum = _chunk_backward(
                p, b, rec.u_in, bins.tile_size, s, per_pixel.index_select(0, a), median_pos[a] - rec.start,
                suffix[a], use,
            )
            suffix = suffix.index_add(0, a, chunk_sum)
            grad_table.index_add_(0, ids.reshape(-1), entry_grad.reshape(ids.numel(), -1))
        return grad_table, None, None, None


@dataclass(frozen=True)
class _UsedGrads:
    median: bool
    distortion: bool


def _chunk_backward(
    p: _Pairs, b: _Blend, u_in: Tensor, tile_size: int, s: BlendSettings, per_pixel: Tensor,
    median_local: Tensor, suffix_after: Tensor, use: _UsedGrads,
) -> tuple[Tensor, Tensor]:
    """Vector-Jacobian product of one chunk: per-entry table-row grads ``[G, K, D]`` and the chunk's
    ``sum_i w_i G_i`` per pixel (carried to earlier chunks)."""
    G, P, K = b.weights.shape
    ts = tile_size
    F = p.entries.shape[-1] - Col.FEATS
    g_feats = per_pixel[..., :F]
    g_alpha, g_median, g_dist, a_tot, wd_tot = per_pixel[..., F:].unbind(-1)
    w, T, a = b.weights, b.t_excl, b.alpha
    dch = s.depth_channel

    # G_i = dL/dw_i, and dL/d(depth of each pair).
    grad_w = torch.matmul(g_feats, p.entries[..., Col.FEATS :].transpose(1, 2))
    grad_w += g_alpha[..., None]
    grad_depth = None
    if s.intersection_depth:
        g_dep = g_feats[..., dch : dch + 1]
        grad_w.addcmul_(p.depth.expand_as(w), g_dep)
        grad_depth = w * g_dep
    if use.distortion:
        depth = p.depth.expand_as(w)
        u_excl = torch.cumsum(b.wd, -1) - b.wd + u_in[..., None]
        gd = g_dist[..., None]
        w_front = 1.0 - T
        a_t = a_tot[..., None]
        grad_w += gd * 2.0 * (2.0 * (depth * w_front - u_excl) + wd_tot[..., None] - depth * a_t)
        gdd = gd * 2.0 * w * (2.0 * w_front + w - a_t)
        grad_depth = gdd if grad_depth is None else grad_depth + gdd
    if use.median:
        in_chunk = (median_local >= 0) & (median_local < K)
        onehot = torch.zeros_like(w).scatter_(
            -1, median_local.clamp(0, K - 1)[..., None], (g_median * in_chunk)[..., None]
        )
        grad_depth = onehot if grad_depth is None else grad_depth + onehot

    # dL/dalpha_k = T_k G_k - (sum_{i>k} w_i G_i) / (1 - alpha_k); zero where not shaded or capped at 0.999.
    wg = w * grad_w
    chunk_sum = wg.sum(-1)
    after = (suffix_after + chunk_sum)[..., None] - torch.cumsum(wg, -1)
    grad_a = T * grad_w
    grad_a -= after / (1.0 - a)
    grad_a.mul_(torch.sign(a * (ALPHA_MAX - a)))

    e_grad = torch.zeros_like(p.entries)
    e_grad[..., Col.OPACITY] = (grad_a * p.gauss).sum(1)
    grad_q = grad_a.mul_(p.raw_alpha).mul_(-0.5)
    use3d = _step(p.q2_minus_q3)
    g_q3 = grad_q * use3d
    g_q2 = grad_q.sub_(g_q3)
    g_sx = p.sx * g_q3
    g_sx.mul_(2.0)
    g_sy = p.sy * g_q3
    g_sy.mul_(2.0)
    if grad_depth is not None:
        if s.intersection_depth:
            gd3 = grad_depth * use3d
            row = p.entries[:, None, :, Col.ROW]
            g_sx.addcmul_(gd3, row[..., 0])
            g_sy.addcmul_(gd3, row[..., 1])
            sums = [torch.nan_to_num(gd3 * p.sx, 0.0, 0.0, 0.0).sum(1),
                    torch.nan_to_num(gd3 * p.sy, 0.0, 0.0, 0.0).sum(1), grad_depth.sum(1)]
            e_grad[..., Col.ROW] = torch.stack(sums, -1)
        else:
            e_grad[..., Col.FEATS + dch] += grad_depth.sum(1)
    g_cross = torch.empty(G, P, 3, K, dtype=w.dtype, device=w.device)
    torch.mul(g_sx, p.inv_cz, out=g_cross[:, :, 0])
    torch.mul(g_sy, p.inv_cz, out=g_cross[:, :, 1])
    cz_term = g_sx.mul_(p.sx).addcmul_(g_sy, p.sy).mul_(p.inv_cz)
    torch.neg(cz_term, out=g_cross[:, :, 2])
    torch.nan_to_num_(g_cross, 0.0, 0.0, 0.0)  # pairs whose ray misses the plane (c_z == 0) get no gradient
    # Reduce over the tile's pixels separably: c = x_l A + y_l B + C_local.
    g_grid = g_cross.view(G, ts, ts, 3, K)  # [G, y, x, comp, K]
    centres, _, _ = _tile_pixels(ts, w.dtype, w.device)
    by_x = g_grid.sum(1)  # [G, x, comp, K]
    by_y = g_grid.sum(2)  # [G, y, comp, K]
    g_local = by_x.sum(1).transpose(1, 2)  # [G, K, comp]
    e_grad[..., Col.C] = g_local
    e_grad[..., Col.A] = torch.einsum("x,gxck->gkc", centres, by_x) + p.offsets[..., 0:1] * g_local
    e_grad[..., Col.B] = torch.einsum("y,gyck->gkc", centres, by_y) + p.offsets[..., 1:2] * g_local

    # Low-pass branch, separable over the tile's pixel rows / columns.
    g_q2_grid = g_q2.view(G, ts, ts, K)  # [G, y, x, K]
    e_grad[..., Col.MEAN2D.start] = 2.0 * FILTER_INV_SQUARE * (p.dx * g_q2_grid.sum(1)).sum(1)
    e_grad[..., Col.MEAN2D.start + 1] = 2.0 * FILTER_INV_SQUARE * (p.dy * g_q2_grid.sum(2)).sum(1)

    e_grad[..., Col.FEATS :] += torch.matmul(g_feats.transpose(1, 2), w).transpose(1, 2)
    return e_grad, chunk_sum


def _scatter_to_grid(bins: TileBins, feats: Tensor, alpha: Tensor, median: Tensor, dist: Tensor):
    n = bins.n_cameras * bins.tiles_x * bins.tiles_y
    P = bins.tile_size**2
    out = []
    for t in (feats, alpha, median, dist):
        grid = t.new_zeros((n, P) + t.shape[2:])
        out.append(grid.index_copy(0, bins.tile_ids, t))
    return tuple(out)


def composite_tiles(table: Tensor, bins: TileBins, settings: BlendSettings):
    """Composite every tile; returns ``feats [T, P, F], alpha [T, P], median [T, P], distortion [T, P]`` over the
    full grid ``T = C * tiles_y * tiles_x`` (tiles without surfels are zero). Custom backward."""
    will_backward = torch.is_grad_enabled() and table.requires_grad
    return _scatter_to_grid(bins, *_CompositeTiles.apply(table, bins, settings, will_backward))


def composite_reference(table: Tensor, bins: TileBins, settings: BlendSettings):
    """:func:`composite_tiles` differentiated by autograd instead (slow, memory hungry; for tests)."""
    st, _ = _run_forward(table, bins, settings)
    return _scatter_to_grid(bins, st.feats, 1.0 - st.trans, st.median, st.distortion)
