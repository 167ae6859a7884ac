"""The original, straightforward ray caster: the reference :func:`gancore_synth.render.render`
is tested against (bit for bit when eager), and the "old" side of the renderer's A/B
benchmark (``benchmarks/synth_render.py --ab``).  Test code only: it is several times slower.

It uses the renderer's scene types and intersection helpers, so both draw the same scenes;
what differs is how the work is organised (see :mod:`gancore_synth.render`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from gancore_synth.render import (
    _BIG,
    _KINDS,
    _MISS,
    BOX,
    CYLINDER,
    AlbedoFn,
    Camera,
    Light,
    Primitives,
    RenderOutput,
    _check_sizes,
    _intervals,
    _screen_boxes,
)

__all__ = ["render_reference"]


_ray_cache: dict[tuple, tuple[Tensor, Tensor]] = {}


def _tile_rays(res: int, tile: int, cam: Camera, device: torch.device) -> tuple[Tensor, Tensor]:
    """Unnormalised ray directions ``(dx, dy)`` per tile ``[nt*nt, T*T]`` (``dz = -1``) and tile ndc bounds."""
    key = (res, tile, cam, str(device))
    if key not in _ray_cache:
        nt = -(-res // tile)
        i = torch.arange(nt * tile, device=device, dtype=torch.float32)
        ndc = (i + 0.5) / res * 2 - 1  # pixel centres; padded pixels fall beyond +1
        x = ndc * cam.tan_half
        y = -ndc * cam.tan_half  # row 0 is the top of the image
        dx = rearrange(x.expand(nt * tile, nt * tile), "(ty y) (tx x) -> (ty tx) (y x)", y=tile, x=tile)
        dy = rearrange(y[:, None].expand(nt * tile, nt * tile), "(ty y) (tx x) -> (ty tx) (y x)", y=tile, x=tile)
        _ray_cache[key] = (dx.contiguous(), dy.contiguous())
    return _ray_cache[key]


def _apply(m: Tensor, v: Tensor, transpose: bool = False) -> Tensor:
    """``m @ v`` (or ``mᵀ @ v``) for many small 3×3 matrices, elementwise (batched bmm of 3×3 is slow on CPU)."""
    if transpose:
        m = m.transpose(-1, -2)
    return (m * v[..., None, :]).sum(-1)


def render_reference(
    prims: Primitives,
    light: Light,
    background: Tensor,
    *,
    resolution: int,
    supersample: int = 2,
    camera: Camera | None = None,
    albedo_fn: AlbedoFn | None = None,
    n_parts: int | None = None,
    tile: int = 8,
) -> RenderOutput:
    """The original, straightforward ray caster (same arguments as :func:`gancore_synth.render.render`).

    Kept as the reference that :func:`gancore_synth.render.render` is tested against, and for A/B benchmarks;
    it is several times slower.

    :param prims: the primitives of ``B`` scenes.
    :param light: one directional light + ambient per scene.
    :param background: ``[B, 3]`` background colour (a slight vertical gradient is added).
    :param resolution: output side in pixels.
    :param supersample: subsamples per pixel side (2 → 2×2 anti-aliasing).
    :param albedo_fn: optional hook that changes surface colours before lighting
        (e.g. wrinkles painted in a head's own frame).
    :param n_parts: when given, also return per-part coverage ``[B, n_parts, R, R]``.
    :param tile: tile side, in subsamples, for culling.
    """
    _check_sizes(resolution, supersample, tile)
    cam = camera or Camera()
    dev = prims.center.device
    B, P = prims.batch, prims.count
    res = resolution * supersample
    tile = min(tile, res)
    nt = -(-res // tile)
    T2 = tile * tile
    tdx, tdy = _tile_rays(res, tile, cam, dev)  # [nt*nt, T2]

    # -- which (image, primitive, tile) triples can hit: projected boxes against tile bounds
    box = _screen_boxes(prims, cam)  # [B, P, 4] in slope units
    edges = torch.arange(nt + 1, device=dev, dtype=torch.float32) * tile / res * 2 - 1
    lo, hi = edges[:-1] * cam.tan_half, edges[1:] * cam.tan_half
    # columns go +x to the right; rows go from +y (top) down
    ox_ = (box[..., 0:1] <= hi) & (box[..., 1:2] >= lo)  # [B, P, nt]
    oy_ = (box[..., 2:3] <= -lo) & (box[..., 3:4] >= -hi)  # [B, P, nt] (row r spans -hi..-lo)
    overlap = oy_[..., :, None] & ox_[..., None, :]  # [B, P, nt, nt]

    # local-frame camera origin and direction matrix per (image, primitive)
    rt = prims.rotation.transpose(-1, -2)  # world→local rotation
    inv_s = 1.0 / prims.scale.clamp_min(1e-8)
    cam_o = torch.tensor([0.0, 0.0, cam.distance], device=dev)
    o_loc = torch.einsum("bpij,bpj->bpi", rt, cam_o - prims.center) * inv_s  # [B, P, 3]
    a_loc = rt * inv_s[..., None]  # d_local = a_loc @ d_world   [B, P, 3, 3]

    keys = torch.full((2, B * nt * nt, T2), _MISS, dtype=torch.int64, device=dev)
    for kind in _KINDS:
        for layer in (0, 1):  # 0 opaque, 1 transparent
            sel = (prims.kind == kind) & (prims.transparent == bool(layer))
            if not bool(sel.any()):
                continue
            pidx = sel.nonzero().flatten()
            b, q, ty, tx = overlap[:, pidx].nonzero(as_tuple=True)
            if b.numel() == 0:
                continue
            p = pidx[q]
            t_i = ty * nt + tx
            a = a_loc[b, p]  # [N, 3, 3]
            rdx, rdy = tdx[t_i], tdy[t_i]  # [N, T2]
            d = tuple(a[:, j, 0:1] * rdx + a[:, j, 1:2] * rdy - a[:, j, 2:3] for j in range(3))
            t0, t1 = _intervals(kind, o_loc[b, p], d, prims.clip[b, p])
            hit = (t0 <= t1) & (t0 > 0)
            key = (t0.clamp_min(0).view(torch.int32).to(torch.int64) << 8) | p[:, None]
            key = torch.where(hit, key, torch.full_like(key, _MISS))
            row = (b * (nt * nt) + t_i)[:, None].expand_as(key)
            keys[layer].scatter_reduce_(0, row, key, "amin")

    keys = rearrange(keys, "l (b ty tx) (y x) -> l b (ty y) (tx x)", b=B, ty=nt, y=tile)[:, :, :res, :res]
    keys = keys.reshape(2, B, res * res)
    # per-pixel unnormalised ray directions
    pix = (torch.arange(res, device=dev, dtype=torch.float32) + 0.5) / res * 2 - 1
    ray_x = (pix * cam.tan_half).expand(res, res).reshape(-1)
    ray_y = (-pix * cam.tan_half)[:, None].expand(res, res).reshape(-1)

    bgy = ray_y / cam.tan_half  # +1 top … -1 bottom
    image = background[:, None, :] * (1.0 + 0.12 * bgy[None, :, None])  # [B, R*R, 3]
    image = image.expand(B, res * res, 3).clone()
    part_map = torch.zeros(B, res * res, dtype=torch.long, device=dev) if n_parts else None

    for layer in (0, 1):
        k = keys[layer]
        bi, pi = (k != _MISS).nonzero(as_tuple=True)
        if bi.numel() == 0:
            continue
        kk = k[bi, pi]
        p = kk & 255
        t = (kk >> 8).to(torch.int32).view(torch.float32)
        if layer == 1:  # transparent: only where in front of the opaque surface
            ko = keys[0][bi, pi]
            t_op = torch.where(ko != _MISS, (ko >> 8).to(torch.int32).view(torch.float32), torch.full_like(t, _BIG))
            front = t < t_op
            bi, pi, p, t = bi[front], pi[front], p[front], t[front]
        rd = torch.stack([ray_x[pi], ray_y[pi], -torch.ones_like(t)], -1)  # [M, 3]
        point = cam_o + t[:, None] * rd
        rot = prims.rotation[bi, p]  # [M, 3, 3]
        sc = prims.scale[bi, p]
        u = _apply(rot, point - prims.center[bi, p], transpose=True) / sc.clamp_min(1e-8)
        kind = prims.kind[p]
        clip = prims.clip[bi, p]
        n_loc = u.clone()
        cyl = kind == CYLINDER
        cap = cyl & (u[:, 2].abs() > u[:, :2].norm(dim=-1))
        n_loc = torch.where((cyl & ~cap)[:, None], n_loc * torch.tensor([1.0, 1.0, 0.0], device=dev), n_loc)
        n_loc = torch.where(cap[:, None], torch.stack([0 * u[:, 0], 0 * u[:, 0], u[:, 2].sign()], -1), n_loc)
        boxm = kind == BOX
        ax = u.abs().argmax(-1)
        n_box = F.one_hot(ax, 3).to(u.dtype) * u.sign()
        n_loc = torch.where(boxm[:, None], n_box, n_loc)
        on_clip = ((u * clip[:, :3]).sum(-1) - clip[:, 3]).abs() < 2e-3
        on_clip &= clip[:, :3].abs().sum(-1) > 0
        n_loc = torch.where(on_clip[:, None], clip[:, :3], n_loc)
        normal = _apply(rot, n_loc / sc.clamp_min(1e-8))
        normal = F.normalize(normal, dim=-1)

        # zones: discs on the local +z side
        rho = u[:, :2].norm(dim=-1)
        front_side = u[:, 2] > 0
        zr = prims.zone_radius[bi, p]
        z1 = front_side & (rho < zr[:, 0])
        z2 = front_side & (rho < zr[:, 1])
        zc = prims.zone_color[bi, p]
        albedo = prims.color[bi, p]
        albedo = torch.where(z1[:, None], zc[:, 0], albedo)
        albedo = torch.where(z2[:, None], zc[:, 1], albedo)
        part = prims.part[p]
        if albedo_fn is not None:
            albedo = albedo_fn(albedo, part, point, normal, bi)

        ldir = F.normalize(light.direction, dim=-1)[bi]
        lam = (normal * ldir).sum(-1).clamp_min(0)
        amb = light.ambient[bi]
        view = F.normalize(-rd, dim=-1)
        half = F.normalize(ldir + view, dim=-1)
        spec = (normal * half).sum(-1).clamp_min(0).pow(24) * prims.shine[bi, p] * (lam > 0)
        lcol = light.color[bi] if light.color is not None else 1.0
        color = (albedo * (amb + (1 - amb) * lam)[:, None] + spec[:, None]) * lcol
        if layer == 0:
            image[bi, pi] = color
            if part_map is not None:
                part_map[bi, pi] = part
        else:
            al = prims.alpha[bi, p]
            alpha = torch.where(z2, al[:, 2], torch.where(z1, al[:, 1], al[:, 0]))[:, None]
            image[bi, pi] = alpha * color + (1 - alpha) * image[bi, pi]
            if part_map is not None:
                part_map[bi, pi] = part

    img = rearrange(image.clamp(0, 1), "b (h w) c -> b c h w", h=res)
    if supersample > 1:
        img = F.avg_pool2d(img, supersample)
    coverage = None
    if n_parts:
        assert part_map is not None
        oh = F.one_hot(part_map, n_parts).to(torch.float32)
        oh = rearrange(oh, "b (h w) k -> b k h w", h=res)
        coverage = F.avg_pool2d(oh, supersample) if supersample > 1 else oh
    return RenderOutput(image=img, coverage=coverage)
