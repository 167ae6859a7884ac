"""A small batched ray caster for analytic primitives, in pure PyTorch.

The built-in synthetic data (:mod:`.synthfaces`, :mod:`.synthchairs`) is drawn with it.
Every image of a batch has its own primitives; nothing loops over pixels or images.

How it stays fast on a CPU:

* Every primitive is a unit shape (sphere, capped cylinder along z, cube) in its own
  frame, placed by ``center + rotation @ diag(scale) @ u``, optionally cut by one plane
  (``n·u <= h``, e.g. a hemisphere).  Ray–shape intersections are closed form.
* The supersampled image is cut into small tiles; a primitive is tested only against the
  tiles its projected bounding box touches (the ``(image, primitive, tile)`` pairs come
  from one ``nonzero``), so a small eye costs a few tiles rather than the whole image.
* The nearest hit of each ray is one ``scatter_reduce(amin)`` over keys packing the hit
  distance (positive float bits sort like integers) with the primitive index.
* Only the winner of each ray is shaded: Lambert + ambient + a little Blinn–Phong.
* Screen boxes are the tighter of the bounding sphere's and the bounding ellipsoid's
  projections; ray directions are broadcast from per-column/per-row slopes; per-hit
  attributes are contiguous row gathers.
* On the CPU, the intersection, surface and lighting stages run as ``torch.compile``d
  loops (see :func:`render_backend`); eagerly, :func:`render` is bit for bit the
  original implementation, which the package's tests keep as ``render_reference``
  (``tests/reference_render.py``) to check this and for A/B benchmarks.

All arithmetic is elementwise per (pair, ray) — no batched matmul — so a pixel's value
does not depend on what else is in the batch: the same scene renders to the same bits.

Conventions: right-handed world, camera on +z looking down −z, +x is image right,
+y image up.  Rotations are given in degrees: yaw about +y (positive turns the object's
+z towards +x, i.e. to the image right), pitch about x (positive tilts +z up), roll about z.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = [
    "ELLIPSOID",
    "CYLINDER",
    "BOX",
    "Camera",
    "Light",
    "Primitives",
    "SceneBuilder",
    "RenderOutput",
    "render",
    "AA_MODES",
    "render_backend",
    "compiled_stage",
    "set_render_backend",
    "rotation",
]

ELLIPSOID, CYLINDER, BOX = 0, 1, 2
_KINDS = {ELLIPSOID: "ellipsoid", CYLINDER: "cylinder", BOX: "box"}
_MISS = torch.iinfo(torch.int64).max
_BIG = 1e20


def rotation(yaw: Tensor, pitch: Tensor | None = None, roll: Tensor | None = None) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from angles in degrees: ``R = R_yaw @ R_pitch @ R_roll``."""
    yaw = torch.as_tensor(yaw, dtype=torch.float32)
    pitch = torch.zeros_like(yaw) if pitch is None else torch.as_tensor(pitch, dtype=torch.float32, device=yaw.device)
    roll = torch.zeros_like(yaw) if roll is None else torch.as_tensor(roll, dtype=torch.float32, device=yaw.device)
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    y, p, r = (torch.deg2rad(a) for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(y), torch.zeros_like(y)

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, -1).unflatten(-1, (3, 3))

    ry = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    # positive pitch tilts +z towards +y: rotation about x by -pitch
    rx = mat(one, zero, zero, zero, p.cos(), p.sin(), zero, -p.sin(), p.cos())
    rz = mat(r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one)
    return ry @ rx @ rz


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on the +z axis at ``distance``, looking at the origin.

    :param distance: camera position ``(0, 0, distance)``, world units.
    :param fov: full vertical (= horizontal) field of view, degrees.
    """

    distance: float = 10.0
    fov: float = 18.0

    def __post_init__(self) -> None:
        if not self.distance > 0:
            raise ValueError(f"Camera.distance must be > 0, got {self.distance!r}")
        if not 0 < self.fov < 170:
            raise ValueError(f"Camera.fov must be in (0, 170) degrees, got {self.fov!r}")

    @property
    def tan_half(self) -> float:
        return math.tan(math.radians(self.fov) / 2)


@dataclass
class Light:
    """One directional light plus ambient, per image.

    :param direction: ``[B, 3]`` towards the light (normalised here).
    :param ambient: ``[B]`` ambient fraction in [0, 1].
    :param color: ``[B, 3]`` light colour (multiplies albedo), or None for white.
    """

    direction: Tensor
    ambient: Tensor
    color: Tensor | None = None


@dataclass
class Primitives:
    """``P`` primitives in each of ``B`` scenes.

    Static per primitive (same for every image): ``kind`` ``[P]`` (ELLIPSOID, CYLINDER, BOX),
    ``part`` ``[P]`` (mask id), ``transparent`` ``[P]`` (drawn over what is behind, with the
    zone opacities ``alpha``).  Per image: ``center`` ``[B,P,3]``, ``rotation`` ``[B,P,3,3]``
    (local→world), ``scale`` ``[B,P,3]`` half-axes (all zero: absent), ``color`` ``[B,P,3]``,
    ``clip`` ``[B,P,4]`` local plane ``(n, h)`` keeping ``n·u <= h``, ``zone_color`` ``[B,P,2,3]``
    and ``zone_radius`` ``[B,P,2]`` (discs on the local +z side: ``|u_xy| < r`` takes that
    colour, zone 2 drawn over zone 1 — irises, pupils, lens glass), ``alpha`` ``[B,P,3]``
    (opacity of base / zone 1 / zone 2 for transparent primitives), ``shine`` ``[B,P]``.
    """

    kind: Tensor
    part: Tensor
    transparent: Tensor
    center: Tensor
    rotation: Tensor
    scale: Tensor
    color: Tensor
    clip: Tensor
    zone_color: Tensor
    zone_radius: Tensor
    alpha: Tensor
    shine: Tensor

    @property
    def batch(self) -> int:
        return self.center.shape[0]

    @property
    def count(self) -> int:
        return self.center.shape[1]

    def transformed(self, rot: Tensor, shift: Tensor, which: Tensor | None = None) -> Primitives:
        """Apply a per-image rigid motion ``x ↦ rot @ x + shift`` to the primitives ``which`` (bool ``[P]``)."""
        center = torch.einsum("bij,bpj->bpi", rot, self.center) + shift[:, None]
        rotm = torch.einsum("bij,bpjk->bpik", rot, self.rotation)
        if which is not None:
            w = which.to(self.center.device)
            center = torch.where(w[None, :, None], center, self.center)
            rotm = torch.where(w[None, :, None, None], rotm, self.rotation)
        return Primitives(**{**self.__dict__, "center": center, "rotation": rotm})


class SceneBuilder:
    """Collects named primitives for a batch of ``B`` scenes, then packs a :class:`Primitives`.

    Per-image arguments may be tensors ``[B, ...]`` or anything broadcastable to them.
    ``visible`` (bool ``[B]``) removes a primitive from the images where it is False.
    """

    def __init__(self, batch: int, device: torch.device | str = "cpu") -> None:
        if batch < 1:
            raise ValueError(f"SceneBuilder needs a batch of at least 1 scene, got {batch!r}")
        self.batch, self.device = batch, torch.device(device)
        self.names: list[str] = []
        self._items: list[dict[str, Tensor | int | bool]] = []

    def _vec(self, value: object, width: int, name: str) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        if t.dim() == 0:
            t = t.expand(width)
        if t.shape[-1] != width and not (t.dim() == 1 and width == 1):
            raise ValueError(f"{name} must end in a dimension of {width}, got shape {tuple(t.shape)}")
        if width == 1 and t.dim() == 1 and t.shape[0] == self.batch:
            t = t[:, None]
        return t.expand(self.batch, width).contiguous()

    def add(
        self,
        name: str,
        kind: int,
        part: int,
        center: object,
        scale: object,
        color: object,
        *,
        rot: Tensor | None = None,
        clip: object = None,
        zones: tuple[object, object, object, object] | None = None,
        alpha: object = None,
        shine: object = 0.0,
        visible: Tensor | None = None,
    ) -> None:
        """Add one primitive (see :class:`Primitives` for the meaning of each field).

        ``zones`` is ``(color1, radius1, color2, radius2)``; ``alpha`` makes it transparent.
        """
        if kind not in _KINDS:
            raise ValueError(f"primitive {name!r}: kind must be one of {sorted(_KINDS)} ({_KINDS}), got {kind!r}")
        if name in self.names:
            raise ValueError(f"primitive {name!r} was added twice")
        b = self.batch
        scale_t = self._vec(scale, 3, f"{name}.scale")
        if visible is not None:
            scale_t = scale_t * visible.to(self.device, torch.float32).reshape(b, 1)
        if rot is None:
            rot_t = torch.eye(3, device=self.device).expand(b, 3, 3)
        else:
            rot_t = rot.to(self.device, torch.float32).expand(b, 3, 3)
        clip_t = self._vec([0.0, 0.0, 0.0, 1.0] if clip is None else clip, 4, f"{name}.clip")
        if zones is None:
            zc = torch.zeros(b, 2, 3, device=self.device)
            zr = torch.zeros(b, 2, device=self.device)
        else:
            c1, r1, c2, r2 = zones
            zc = torch.stack([self._vec(c1, 3, f"{name}.zone1"), self._vec(c2, 3, f"{name}.zone2")], 1)
            zr = torch.cat([self._vec(r1, 1, f"{name}.r1"), self._vec(r2, 1, f"{name}.r2")], 1)
        self.names.append(name)
        self._items.append(
            dict(
                kind=kind,
                part=part,
                transparent=alpha is not None,
                center=self._vec(center, 3, f"{name}.center"),
                rotation=rot_t.contiguous(),
                scale=scale_t,
                color=self._vec(color, 3, f"{name}.color"),
                clip=clip_t,
                zone_color=zc,
                zone_radius=zr,
                alpha=self._vec(1.0 if alpha is None else alpha, 3, f"{name}.alpha"),
                shine=self._vec(shine, 1, f"{name}.shine")[:, 0],
            )
        )

    def build(self) -> Primitives:
        """Stack everything added so far into one :class:`Primitives`."""
        if not self._items:
            raise ValueError("SceneBuilder.build: no primitive was added")
        if len(self._items) > 255:
            raise ValueError(f"at most 255 primitives per scene, got {len(self._items)}")
        it = self._items
        dev = self.device
        return Primitives(
            kind=torch.tensor([i["kind"] for i in it], device=dev),
            part=torch.tensor([i["part"] for i in it], device=dev),
            transparent=torch.tensor([i["transparent"] for i in it], device=dev),
            **{k: torch.stack([i[k] for i in it], 1) for k in (
                "center", "rotation", "scale", "color", "clip", "zone_color", "zone_radius", "alpha", "shine")},
        )


@dataclass
class RenderOutput:
    """What :func:`render` returns.

    :param image: ``[B, 3, R, R]`` in [0, 1].
    :param coverage: ``[B, n_parts, R, R]`` fraction of each pixel's subsamples showing each
        part (part 0 is the background), or None when masks were not asked for.
    """

    image: Tensor
    coverage: Tensor | None = None


#: albedo hook: (albedo [M,3], part [M], point [M,3] world, normal [M,3], image index [M]) -> albedo
AlbedoFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
#: fine-texture hook for ``aa="adaptive"``: (point [M,3] world, part [M], image index [M]) -> bool [M],
#: True where the albedo hook paints detail finer than ~2 pixels near ``point`` (conservative)
FineFn = Callable[[Tensor, Tensor, Tensor], Tensor]
AA_MODES = ("full", "adaptive")

def _screen_boxes(prims: Primitives, cam: Camera) -> Tensor:
    """Conservative screen boxes ``[B, P, 4]`` (xmin, xmax, ymin, ymax in ray-slope units) per primitive."""
    s = prims.scale
    radius = torch.where(
        prims.kind[None, :] == ELLIPSOID, s.amax(-1), s.norm(dim=-1)
    )  # bounding sphere radius
    c = prims.center
    depth = cam.distance - c[..., 2]

    def slopes(lateral: Tensor) -> tuple[Tensor, Tensor]:
        # the sphere's disc in the (lateral, depth) plane seen from the camera: exact slope range
        dist = torch.sqrt(lateral * lateral + depth * depth).clamp_min(1e-6)
        centre = torch.atan2(lateral, depth)
        half = torch.asin((radius * 1.001 + 1e-4) / dist).nan_to_num(math.pi)
        lo_a, hi_a = centre - half, centre + half
        ok = (lo_a > -math.pi / 2 + 1e-3) & (hi_a < math.pi / 2 - 1e-3) & (radius < dist)
        lo = torch.where(ok, torch.tan(lo_a), torch.full_like(lo_a, -_BIG))
        hi = torch.where(ok, torch.tan(hi_a), torch.full_like(hi_a, _BIG))
        return lo, hi

    x0, x1 = slopes(c[..., 0])
    y0, y1 = slopes(c[..., 1])
    box = torch.stack([x0, x1, y0, y1], -1)
    return torch.where((radius > 0)[..., None], box, torch.full_like(box, _BIG))


def _tight_boxes(prims: Primitives, cam: Camera) -> Tensor:
    """Screen boxes ``[B, P, 4]`` like :func:`_screen_boxes`, intersected with those of a bounding ellipsoid.

    The unit shape's bounding ellipsoid (half-axes × 1 for an ellipsoid, √2 for a capped
    cylinder, √3 for a box) projects to a conic whose slope range along x (and y) is
    where the plane through the camera ``X + sZ = 0`` is tangent to it:
    ``(q_x + s q_z)² = nᵀ Q n`` with ``Q = R diag(s²) Rᵀ``, a quadratic in ``s``.  Much
    tighter than the bounding sphere for flat or long primitives (lips, slats, legs);
    still conservative (padded), so culling with it changes no pixel.
    """
    sphere = _screen_boxes(prims, cam)
    grow = torch.tensor([1.0, math.sqrt(2.0), math.sqrt(3.0)], device=prims.scale.device)[prims.kind]
    s = prims.scale * grow[None, :, None] * 1.001 + 1e-4
    r = prims.rotation
    q_mat = torch.einsum("bpik,bpjk->bpij", r * s[:, :, None, :], r * s[:, :, None, :])  # R S² Rᵀ
    q = prims.center - torch.tensor([0.0, 0.0, cam.distance], device=s.device)
    qz = q[..., 2]
    a = qz * qz - q_mat[..., 2, 2]

    def span(i: int) -> tuple[Tensor, Tensor]:
        bh = q[..., i] * qz - q_mat[..., i, 2]
        c = q[..., i] * q[..., i] - q_mat[..., i, i]
        disc = bh * bh - a * c
        ok = (a > 1e-6) & (disc >= 0)
        root = disc.clamp_min(0).sqrt()
        a_ = torch.where(ok, a, torch.ones_like(a))
        lo, hi = (-bh - root) / a_, (-bh + root) / a_
        pad = 1e-4 * (1 + lo.abs().maximum(hi.abs()))
        return torch.where(ok, lo - pad, torch.full_like(lo, -_BIG)), torch.where(ok, hi + pad, torch.full_like(hi, _BIG))

    x0, x1 = span(0)
    y0, y1 = span(1)
    tight = torch.stack([x0, x1, y0, y1], -1)
    return torch.stack([
        torch.maximum(sphere[..., 0], tight[..., 0]), torch.minimum(sphere[..., 1], tight[..., 1]),
        torch.maximum(sphere[..., 2], tight[..., 2]), torch.minimum(sphere[..., 3], tight[..., 3]),
    ], -1)


def _slab(oc: Tensor, dc: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through the slab -1 <= u <= 1 along one axis."""
    inv = 1.0 / torch.where(dc.abs() < 1e-12, torch.full_like(dc, 1e-12), dc)
    t1, t2 = (-1 - oc) * inv, (1 - oc) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _intervals(kind: int, o: Tensor, d: tuple[Tensor, Tensor, Tensor], clip: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances ``[N, R]`` of rays ``o + t d`` (local frame) through a unit ``kind``.

    ``o``: ``[N, 3]`` local origins, ``d``: three ``[N, R]`` local direction components,
    ``clip``: ``[N, 4]`` plane keeping ``n·u <= h``.  A miss has entry > exit.
    """
    ox, oy, oz = (o[:, i : i + 1] for i in range(3))
    dx, dy, dz = d

    if kind == BOX:
        a0, a1 = _slab(ox, dx)
        b0, b1 = _slab(oy, dy)
        c0, c1 = _slab(oz, dz)
        t0 = torch.maximum(torch.maximum(a0, b0), c0)
        t1 = torch.minimum(torch.minimum(a1, b1), c1)
    else:
        if kind == ELLIPSOID:
            a = dx * dx + dy * dy + dz * dz
            b = ox * dx + oy * dy + oz * dz
            c = ox * ox + oy * oy + oz * oz - 1
        else:  # cylinder side
            a = (dx * dx + dy * dy).clamp_min(1e-12)
            b = ox * dx + oy * dy
            c = ox * ox + oy * oy - 1
        disc = b * b - a * c
        root = disc.clamp_min(0).sqrt()
        t0 = (-b - root) / a
        t1 = torch.where(disc >= 0, (-b + root) / a, t0 - 1)
        if kind == CYLINDER:
            c0, c1 = _slab(oz, dz)
            t0, t1 = torch.maximum(t0, c0), torch.minimum(t1, c1)
    # the clip half-space n·u <= h
    n = clip[:, :3]
    h = clip[:, 3:4]
    nd = n[:, 0:1] * dx + n[:, 1:2] * dy + n[:, 2:3] * dz
    no = (n * o).sum(-1, keepdim=True)
    safe = torch.where(nd.abs() < 1e-12, torch.full_like(nd, 1e-12), nd)
    tp = (h - no) / safe
    inside = no <= h
    t0 = torch.where(nd < -1e-12, torch.maximum(t0, tp), t0)
    t1 = torch.where(nd > 1e-12, torch.minimum(t1, tp), t1)
    t1 = torch.where((nd.abs() <= 1e-12) & ~inside, t0 - 1, t1)
    return t0, t1


_axis_cache: dict[tuple, tuple[Tensor, Tensor]] = {}


def _axis_rays(res: int, tile: int, cam: Camera, device: torch.device) -> tuple[Tensor, Tensor]:
    """Ray slopes of the subsample columns ``x [nt, tile]`` and rows ``y [nt, tile]`` (the reference renderer's tile rays)."""
    key = (res, tile, cam, str(device))
    if key not in _axis_cache:
        nt = -(-res // tile)
        i = torch.arange(nt * tile, device=device, dtype=torch.float32)
        ndc = (i + 0.5) / res * 2 - 1
        x = ndc * cam.tan_half
        y = -ndc * cam.tan_half
        _axis_cache[key] = (x.reshape(nt, tile).contiguous(), y.reshape(nt, tile).contiguous())
    return _axis_cache[key]


def _near_keys(kind: int, clipped: bool, o: Tensor, d: tuple[Tensor, Tensor, Tensor], clip: Tensor, p: Tensor) -> Tensor:
    """Sort keys ``[N, R]`` (hit distance bits << 8 | primitive, or ``_MISS``) of rays through unit ``kind``s.

    ``clipped=False`` is the fast path for pairs whose clip plane keeps everything (``n = 0``,
    ``h >= 0``): it skips the plane, and for ellipsoids the exit distance too.  Every
    operation that remains is the one :func:`_intervals` does, in the same order, so the
    keys are bit-identical to the general path.
    """
    if clipped or kind != ELLIPSOID:
        if clipped:
            t0, t1 = _intervals(kind, o, d, clip)
        else:
            t0, t1 = _intervals_unclipped(kind, o, d)
        hit = (t0 <= t1) & (t0 > 0)
    else:
        ox, oy, oz = (o[:, i : i + 1] for i in range(3))
        dx, dy, dz = d
        a = dx * dx + dy * dy + dz * dz
        b = ox * dx + oy * dy + oz * dz
        c = ox * ox + oy * oy + oz * oz - 1
        disc = b * b - a * c
        root = disc.clamp_min(0).sqrt()
        t0 = (-b - root) / a
        # exit >= entry whenever disc >= 0 (a > 0, root >= 0), so this is t0 <= t1 & t0 > 0
        hit = (disc >= 0) & (t0 > 0)
    key = (t0.clamp_min(0).view(torch.int32).to(torch.int64) << 8) | p[:, None]
    return key.masked_fill_(~hit, _MISS)


def _intervals_unclipped(kind: int, o: Tensor, d: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """:func:`_intervals` without the clip plane (for a plane ``n = 0, h >= 0`` it changes nothing)."""
    ox, oy, oz = (o[:, i : i + 1] for i in range(3))
    dx, dy, dz = d

    if kind == BOX:
        a0, a1 = _slab(ox, dx)
        b0, b1 = _slab(oy, dy)
        c0, c1 = _slab(oz, dz)
        return torch.maximum(torch.maximum(a0, b0), c0), torch.minimum(torch.minimum(a1, b1), c1)
    a = (dx * dx + dy * dy).clamp_min(1e-12)
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - 1
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    t0 = (-b - root) / a
    t1 = torch.where(disc >= 0, (-b + root) / a, t0 - 1)
    c0, c1 = _slab(oz, dz)
    return torch.maximum(t0, c0), torch.minimum(t1, c1)


def _rows(t: Tensor, idx: Tensor) -> Tensor:
    """``t.flatten(0, 1)[idx]`` for a ``[B, P, ...]`` table, as one contiguous row gather."""
    return t.reshape(-1, *t.shape[2:]).index_select(0, idx)


def _dot3(a: Tensor, b: Tensor) -> Tensor:
    """``(a[:, :3] * b[:, :3]).sum(-1)`` written out: the same sequential sum, without a reduction kernel."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _apply3(m: Tensor, v: Tensor, transpose: bool = False) -> Tensor:
    """``m @ v`` (or ``mᵀ @ v``) for ``[M, 3, 3]`` and ``[M, 3]``, written out (same sequential sums, bit for bit)."""
    if transpose:
        return m[:, 0] * v[:, 0:1] + m[:, 1] * v[:, 1:2] + m[:, 2] * v[:, 2:3]
    return m[:, :, 0] * v[:, 0:1] + m[:, :, 1] * v[:, 1:2] + m[:, :, 2] * v[:, 2:3]


_BACKEND: str | None = None
_COMPILED: dict[str, Callable] = {}
_FUNCS: dict[str, Callable] = {}  # filled at the end of the module


def set_render_backend(name: str | None) -> None:
    """Force the backend of :func:`render`: ``"compiled"``, ``"eager"``, or None to decide again.

    The default is decided once per process by :func:`render_backend`.
    """
    global _BACKEND
    if name not in (None, "compiled", "eager"):
        raise ValueError(f"render backend must be 'compiled', 'eager' or None, got {name!r}")
    _BACKEND = name
    if name == "compiled":
        _compile()


def _compile() -> None:
    if not _COMPILED:
        # static inner sizes (3, 9, the tile), dynamic leading ones: marked per call in _run
        _COMPILED.update({k: torch.compile(f, dynamic=False) for k, f in _FUNCS.items()})


def render_backend() -> str:
    """How :func:`render` runs on the CPU: ``"compiled"`` (torch.compile, inductor) or ``"eager"``.

    Decided once per process: ``GANCORE_RENDER_COMPILE=0`` chooses eager; otherwise the hot
    loops are compiled (first use: ~30-60 s, then cached on disk by inductor) and checked on
    a tiny scene, falling back to eager (with a warning) when compiling fails, e.g. without
    a C++ compiler.  The two backends agree to ~1e-6 per pixel, not bit for bit.
    """
    global _BACKEND
    if _BACKEND is None:
        if os.environ.get("GANCORE_RENDER_COMPILE", "1").strip().lower() in ("0", "false", "no", "off", "eager"):
            _BACKEND = "eager"
        else:
            try:
                _compile()
                _BACKEND = "compiled"
                _smoke_test()
            except Exception as e:  # noqa: BLE001 - any compiler failure means: stay eager
                _COMPILED.clear()
                _BACKEND = "eager"
                warnings.warn(f"gancore_synth.render: torch.compile failed ({type(e).__name__}: {e}); "
                              "rendering eagerly (several times slower)", RuntimeWarning, stacklevel=2)
    return _BACKEND


def _smoke_test() -> None:
    """Render two tiny scenes of every kind (compiles every stage; raises if anything fails)."""
    # every leading size distinct and unlike any inner one (3, 4, 6, 8, 9), so that the first
    # compile assumes no equalities between them ("duck sizing") that later calls would break
    b = 5
    sb = SceneBuilder(b)
    shift = torch.linspace(-0.2, 0.2, b)[:, None]
    sb.add("e", ELLIPSOID, 1, shift * torch.tensor([1.0, 0.0, 0.0]), [1.0, 0.8, 0.9], [0.8, 0.6, 0.5],
           clip=[0.0, 1.0, 0.0, 0.5], zones=([0.1, 0.2, 0.3], 0.5, [0.0, 0.0, 0.0], 0.2))
    sb.add("e2", ELLIPSOID, 1, [0.0, -0.7, 0.2], [0.5, 0.3, 0.4], [0.8, 0.5, 0.5])
    sb.add("c", CYLINDER, 2, [0.5, 0.0, 0.5], [0.3, 0.3, 0.1], [0.2, 0.3, 0.4], alpha=[1.0, 0.5, 1.0],
           zones=([0.1, 0.1, 0.1], 0.7, [0.1, 0.1, 0.1], 0.0))
    sb.add("c2", CYLINDER, 2, [-0.5, -0.5, 0.3], [0.1, 0.1, 0.4], [0.2, 0.3, 0.4], rot=rotation(torch.full((b,), 30.0)))
    sb.add("b", BOX, 3, [-0.5, 0.3, 0.5], [0.2, 0.3, 0.1], [0.5, 0.5, 0.5], rot=rotation(torch.full((b,), 20.0)))
    sb.add("b2", BOX, 3, [0.6, 0.6, 0.0], [0.2, 0.1, 0.1], [0.5, 0.5, 0.5], alpha=[0.5, 0.5, 0.5])
    sb.add("e3", ELLIPSOID, 2, [0.0, 0.9, 0.0], [0.3, 0.1, 0.1], [0.5, 0.5, 0.5], shine=0.5)
    light = Light(torch.tensor([[0.3, 0.5, 1.0]]).expand(b, 3), torch.full((b,), 0.4))
    out = render(sb.build(), light, torch.full((b, 3), 0.9), resolution=22, camera=Camera(10.0, 20.0), n_parts=5)
    if not bool(torch.isfinite(out.image).all()):
        raise RuntimeError("compiled renderer produced non-finite pixels")


def _run(name: str, *args: object) -> Tensor:
    """Call stage ``name`` (compiled when the backend is), padding a batch of 1 row to 2 (no 0/1 specialisation)."""
    fn = _COMPILED.get(name) if _BACKEND == "compiled" else None
    if fn is None:
        return _FUNCS[name](*args)
    n = args[0].shape[0]  # type: ignore[union-attr]

    def prep(a: object) -> object:
        if isinstance(a, tuple):
            return tuple(prep(x) for x in a)
        if not isinstance(a, Tensor) or a.dim() == 0:
            return a
        if a.shape[0] == 1:  # sizes 0/1 would be specialised: pad to 2 rows
            a = a.expand(2, *a.shape[1:])
        a = a.contiguous() if a._base is None else a.clone()  # no guards on view bases
        torch._dynamo.maybe_mark_dynamic(a, 0)
        return a

    out = fn(*[prep(a) for a in args])
    if n >= 2:
        return out
    return tuple(o[:1] for o in out) if isinstance(out, tuple) else out[:1]  # type: ignore[return-value]


def _pool(image: Tensor, b: int, res: int, ss: int) -> Tensor:
    """``avg_pool2d`` of the ``[B*res*res, 3]`` subsample colours to ``[B, 3, res/ss, res/ss]``.

    Sums the ``ss × ss`` subsamples in avg_pool2d's order (row by row) then divides, on the
    pixel-interleaved layout directly (avg_pool2d on the permuted view is slow).
    """
    r = res // ss
    x = image.view(b, r, ss, r, ss, 3)
    acc = None
    for i in range(ss):
        for j in range(ss):
            acc = x[:, :, i, :, j] if acc is None else acc + x[:, :, i, :, j]
    assert acc is not None
    if ss > 1:
        acc = acc / (ss * ss)
    return acc.permute(0, 3, 1, 2).contiguous()


_EAGER_ONLY: set[str] = set()  # stages whose lazy compile failed


def compiled_stage(name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` (pure tensor code, first argument a per-row tensor) run like :func:`render`'s stages.

    Compiled (once, lazily) when :func:`render_backend` is ``"compiled"`` and the first
    argument is on the CPU; eager otherwise.  Used for albedo hooks (e.g. synthfaces' wrinkles).
    """
    _FUNCS.setdefault(name, fn)

    def call(*args: object) -> Tensor:
        if args[0].device.type == "cpu" and render_backend() == "compiled" and name not in _EAGER_ONLY:  # type: ignore[union-attr]
            if name not in _COMPILED:
                _COMPILED[name] = torch.compile(_FUNCS[name], dynamic=False)
            try:
                return _run(name, *args)
            except Exception as e:  # noqa: BLE001 - compiling happens on first call; stay eager if it fails
                _EAGER_ONLY.add(name)
                warnings.warn(f"gancore_synth.render: compiling stage {name!r} failed ({type(e).__name__}: {e}); "
                              f"running it eagerly", stacklevel=2)
        return fn(*args)

    return call


def _check_sizes(resolution: int, supersample: int, tile: int) -> None:
    """The size arguments of :func:`render` (and of the tests' reference renderer)."""
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"render: resolution must be a positive int, got {resolution!r}")
    if not isinstance(supersample, int) or not 1 <= supersample <= 8:
        raise ValueError(f"render: supersample must be an int in 1..8, got {supersample!r}")
    if tile < 1:
        raise ValueError(f"render: tile must be >= 1, got {tile!r}")


def render(
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
    aa: str = "full",
    fine_texture: FineFn | None = None,
) -> RenderOutput:
    """Ray-cast a batch of scenes.

    :param prims: the primitives of ``B`` scenes.
    :param light: one directional light + ambient per scene.
    :param background: ``[B, 3]`` background colour (a slight vertical gradient is added).
    :param resolution: output side in pixels.
    :param supersample: subsamples per pixel side (2 → 2×2 anti-aliasing).
    :param albedo_fn: optional hook that changes surface colours before lighting
        (e.g. wrinkles painted in a head's own frame).
    :param n_parts: when given, also return per-part coverage ``[B, n_parts, R, R]``.
    :param tile: tile side, in subsamples, for culling.
    :param aa: ``"full"`` shades every subsample; ``"adaptive"`` shades every subsample
        only of pixels with an edge among their own subsamples and the other pixels once
        (see :func:`_adaptive_finish`): images within ~0.03/255 on average of ``"full"`` for
        faces, identical masks; ~1.2× faster for faces at 128 px, no faster at 64 px (see
        docs/data.md).  Same as ``"full"`` when ``supersample == 1``.
    :param fine_texture: for ``aa="adaptive"``: where ``albedo_fn`` paints detail finer
        than a pixel (there the albedo is averaged over the pixel's subsample hits).

    Renders the same pixels as the original implementation (``tests/reference_render.py``),
    with less work: tighter culling, ray directions broadcast from per-column and per-row
    slopes instead of gathered per tile, pairs whose clip plane keeps everything skip the
    plane, and every per-hit lookup is one contiguous row gather.  Eagerly
    (``render_backend() == "eager"``, or off the CPU) the floating-point operations are
    those of the reference, so the bits are too; compiled, pixels agree to ~1e-6 (inductor
    rounds ``sqrt``/``pow`` differently).
    """
    _check_sizes(resolution, supersample, tile)
    if aa not in AA_MODES:
        raise ValueError(f"render: aa must be one of {AA_MODES}, got {aa!r}")
    cam = camera or Camera()
    dev = prims.center.device
    B, P = prims.batch, prims.count
    res = resolution * supersample
    tile = min(tile, res)
    nt = -(-res // tile)
    T2 = tile * tile
    col_x, row_y = _axis_rays(res, tile, cam, dev)  # [nt, tile] each

    # -- which (image, primitive, tile) triples can hit: projected boxes against tile bounds
    box = _tight_boxes(prims, cam)  # [B, P, 4] in slope units
    edges = torch.arange(nt + 1, device=dev, dtype=torch.float32) * tile / res * 2 - 1
    lo, hi = edges[:-1] * cam.tan_half, edges[1:] * cam.tan_half
    ox_ = (box[..., 0:1] <= hi) & (box[..., 1:2] >= lo)  # [B, P, nt]
    oy_ = (box[..., 2:3] <= -lo) & (box[..., 3:4] >= -hi)  # [B, P, nt]
    overlap = oy_[..., :, None] & ox_[..., None, :]  # [B, P, nt, nt]

    rt = prims.rotation.transpose(-1, -2)
    inv_s = 1.0 / prims.scale.clamp_min(1e-8)
    cam_o = torch.tensor([0.0, 0.0, cam.distance], device=dev)
    o_loc = torch.einsum("bpij,bpj->bpi", rt, cam_o - prims.center) * inv_s  # [B, P, 3]
    a_loc = (rt * inv_s[..., None]).reshape(B, P, 9)  # d_local = a_loc @ d_world
    clip_all = prims.clip
    # a plane n = 0, h >= 0 keeps everything: such pairs take the cheaper path
    cuts = (clip_all[..., :3] != 0).any(-1) | (clip_all[..., 3] < 0)  # [B, P]

    compiled = dev.type == "cpu" and render_backend() == "compiled"
    keys = torch.full((2, B * nt * nt, T2), _MISS, dtype=torch.int64, device=dev)
    for layer in (0, 1) if compiled else ():  # every kind at once, one fused loop per layer
        pidx = (prims.transparent == bool(layer)).nonzero().flatten()
        if pidx.numel() == 0:
            continue
        b, q, ty, tx = overlap[:, pidx].nonzero(as_tuple=True)
        if b.numel() == 0:
            continue
        p = pidx[q]
        bp = b * P + p
        key = _run("keys", bp, p, tx, ty, o_loc.reshape(-1, 3), a_loc.reshape(-1, 9), col_x, row_y,
                   clip_all.reshape(-1, 4), prims.kind)
        row = (b * (nt * nt) + ty * nt + tx)[:, None].expand_as(key)
        keys[layer].scatter_reduce_(0, row, key, "amin")
    for kind in () if compiled else _KINDS:
        for layer in (0, 1):  # 0 opaque, 1 transparent
            sel = (prims.kind == kind) & (prims.transparent == bool(layer))
            if not bool(sel.any()):
                continue
            pidx = sel.nonzero().flatten()
            b, q, ty, tx = overlap[:, pidx].nonzero(as_tuple=True)
            if b.numel() == 0:
                continue
            p = pidx[q]
            bp = b * P + p
            cut = cuts.reshape(-1).index_select(0, bp)
            for clipped in (False, True):
                m = cut if clipped else ~cut
                if not bool(m.any()):
                    continue
                mi = m.nonzero().flatten()
                bpm, pm = bp.index_select(0, mi), p.index_select(0, mi)
                tym, txm = ty.index_select(0, mi), tx.index_select(0, mi)
                n = bpm.shape[0]
                a = _rows(a_loc, bpm)  # [n, 9]
                cx = col_x.index_select(0, txm)[:, None, :]  # [n, 1, tile]
                ry = row_y.index_select(0, tym)[:, :, None]  # [n, tile, 1]
                d = tuple(
                    (a[:, 3 * j : 3 * j + 1, None] * cx + a[:, 3 * j + 1 : 3 * j + 2, None] * ry
                     - a[:, 3 * j + 2 : 3 * j + 3, None]).reshape(n, T2)
                    for j in range(3)
                )
                key = _near_keys(kind, clipped, _rows(o_loc, bpm), d, _rows(clip_all, bpm), pm)
                row = (bpm // P * (nt * nt) + tym * nt + txm)[:, None].expand_as(key)
                keys[layer].scatter_reduce_(0, row, key, "amin")

    keys = rearrange(keys, "l (b ty tx) (y x) -> l (b ty y tx x)", b=B, ty=nt, y=tile, tx=nt)
    if nt * tile != res:
        keys = keys.reshape(2, B, nt * tile, nt * tile)[:, :, :res, :res].reshape(2, -1)
    RR = res * res
    pix = (torch.arange(res, device=dev, dtype=torch.float32) + 0.5) / res * 2 - 1
    ray_x = (pix * cam.tan_half).expand(res, res).reshape(-1)
    ray_y = (-pix * cam.tan_half)[:, None].expand(res, res).reshape(-1)

    ldir_all = F.normalize(light.direction, dim=-1)
    tabs: list[tuple[Tensor, ...]] = []

    def shade(layer: int, flat: Tensor, bi: Tensor, pi: Tensor, p: Tensor, t: Tensor, rxs: Tensor, rys: Tensor,
              img: Tensor, pmap: Tensor | None, afn: AlbedoFn | None = albedo_fn) -> None:
        """Shade hits of images ``bi``, rays ``pi`` (into ``rxs``/``rys``), primitives ``p`` at distances ``t``
        into rows ``flat`` of ``img`` (and ``pmap``)."""
        bp = bi * P + p
        if compiled:
            if not tabs:
                tabs.append(tuple(x.reshape(B * P, -1) for x in (
                    prims.rotation, prims.scale, prims.center, clip_all, prims.zone_radius, prims.zone_color, prims.color)))
            point, normal, z1, z2, albedo = _run("surface", bp, p, pi, t, rxs, rys, float(cam.distance), tabs[0],
                                                 prims.kind)
            part = prims.part.index_select(0, p)
            if afn is not None:
                albedo = afn(albedo, part, point, normal, bi)
            lcol = light.color if light.color is not None else torch.ones_like(ldir_all)
            color = _run("lighting", bi, bp, pi, normal, albedo, rxs, rys, ldir_all, light.ambient,
                         prims.shine.reshape(-1), lcol)
            if layer == 1:
                color = _run("blend", bp, prims.alpha.reshape(-1, 3), z1, z2, color, img.index_select(0, flat))
            img.index_copy_(0, flat, color)
            if pmap is not None:
                pmap.index_copy_(0, flat, part)
            return
        rd = torch.stack([rxs.index_select(0, pi), rys.index_select(0, pi), -torch.ones_like(t)], -1)  # [M, 3]
        point = cam_o + t[:, None] * rd
        rot = _rows(prims.rotation, bp)  # [M, 3, 3]
        sc = _rows(prims.scale, bp)
        u = _apply3(rot, point - _rows(prims.center, bp), transpose=True) / sc.clamp_min(1e-8)
        kind = prims.kind.index_select(0, p)
        clip = _rows(clip_all, bp)
        n_loc = u.clone()
        cyl = kind == CYLINDER
        if bool(cyl.any()):
            cap = cyl & (u[:, 2].abs() > u[:, :2].norm(dim=-1))
            n_loc = torch.where((cyl & ~cap)[:, None], n_loc * torch.tensor([1.0, 1.0, 0.0], device=dev), n_loc)
            n_loc = torch.where(cap[:, None], torch.stack([0 * u[:, 0], 0 * u[:, 0], u[:, 2].sign()], -1), n_loc)
        boxm = kind == BOX
        if bool(boxm.any()):
            ax = u.abs().argmax(-1)
            n_box = F.one_hot(ax, 3).to(u.dtype) * u.sign()
            n_loc = torch.where(boxm[:, None], n_box, n_loc)
        on_clip = (_dot3(u, clip) - clip[:, 3]).abs() < 2e-3
        ca = clip[:, :3].abs()
        on_clip &= (ca[:, 0] + ca[:, 1] + ca[:, 2]) > 0
        n_loc = torch.where(on_clip[:, None], clip[:, :3], n_loc)
        normal = _apply3(rot, n_loc / sc.clamp_min(1e-8))
        normal = F.normalize(normal, dim=-1)

        # zones: discs on the local +z side
        rho = u[:, :2].norm(dim=-1)
        front_side = u[:, 2] > 0
        zr = _rows(prims.zone_radius, bp)
        z1 = front_side & (rho < zr[:, 0])
        z2 = front_side & (rho < zr[:, 1])
        zc = _rows(prims.zone_color, bp)
        albedo = _rows(prims.color, bp)
        albedo = torch.where(z1[:, None], zc[:, 0], albedo)
        albedo = torch.where(z2[:, None], zc[:, 1], albedo)
        part = prims.part.index_select(0, p)
        if afn is not None:
            albedo = afn(albedo, part, point, normal, bi)

        ldir = ldir_all.index_select(0, bi)
        lam = _dot3(normal, ldir).clamp_min(0)
        amb = light.ambient.index_select(0, bi)
        view = F.normalize(-rd, dim=-1)
        half = F.normalize(ldir + view, dim=-1)
        spec = _dot3(normal, half).clamp_min(0).pow(24) * _rows(prims.shine, bp) * (lam > 0)
        lcol = light.color.index_select(0, bi) if light.color is not None else 1.0
        color = (albedo * (amb + (1 - amb) * lam)[:, None] + spec[:, None]) * lcol
        if layer == 0:
            img.index_copy_(0, flat, color)
        else:
            al = _rows(prims.alpha, bp)
            alpha = torch.where(z2, al[:, 2], torch.where(z1, al[:, 1], al[:, 0]))[:, None]
            img.index_copy_(0, flat, alpha * color + (1 - alpha) * img.index_select(0, flat))
        if pmap is not None:
            pmap.index_copy_(0, flat, part)

    def dist(k: Tensor) -> Tensor:
        return (k >> 8).to(torch.int32).view(torch.float32)

    if aa == "adaptive" and supersample > 1:
        return _adaptive_finish(prims, keys, shade, cam, B, P, resolution, supersample, background,
                                clip_all, cuts, a_loc, o_loc, albedo_fn, fine_texture, n_parts)

    bgy = ray_y / cam.tan_half  # +1 top … -1 bottom
    image = background[:, None, :] * (1.0 + 0.12 * bgy[None, :, None])  # [B, R*R, 3]
    image = image.expand(B, RR, 3).reshape(B * RR, 3).contiguous()

    part_map = torch.zeros(B * RR, dtype=torch.long, device=dev) if n_parts else None
    for layer in (0, 1):
        k = keys[layer]
        flat = (k != _MISS).nonzero().flatten()
        if flat.numel() == 0:
            continue
        kk = k.index_select(0, flat)
        t = dist(kk)
        if layer == 1:  # transparent: only where in front of the opaque surface
            ko = keys[0].index_select(0, flat)
            t_op = torch.where(ko != _MISS, dist(ko), torch.full_like(t, _BIG))
            front = (t < t_op).nonzero().flatten()
            flat, kk, t = flat.index_select(0, front), kk.index_select(0, front), t.index_select(0, front)
            if flat.numel() == 0:
                continue
        bi = flat // RR
        shade(layer, flat, bi, flat - bi * RR, kk & 255, t, ray_x, ray_y, image, part_map)

    img = _pool(image.clamp_(0, 1), B, res, supersample)
    coverage = None
    if n_parts:
        assert part_map is not None
        oh = F.one_hot(part_map.view(B, RR), n_parts).to(torch.float32)
        oh = rearrange(oh, "b (h w) k -> b k h w", h=res)
        coverage = F.avg_pool2d(oh, supersample) if supersample > 1 else oh
    return RenderOutput(image=img, coverage=coverage)


def _aa_classify(k0: Tensor, k1: Tensor, detail: Tensor, plane: Tensor, sx: Tensor, sy: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Which pixels :func:`_adaptive_finish` supersamples, from the subsample keys ``[B, r, ss, r, ss]``.

    ``detail``: ``[B, P+1]`` per primitive (last column: none); ``plane``: ``[B, P+1, 4]``
    the clip plane along a ray, ``n·u - h = c + t (gx wx + gy wy - gz)`` as ``(gx, gy, gz, c)``
    (``c`` huge where the plane cuts nothing); ``sx``/``sy``: subsample column/row slopes
    ``[r, ss]``.  Returns ``(flag, c0, c1, on_plane)`` per pixel ``[B, r, r]``: supersample
    it, the opaque and transparent primitive ids of its first subsample (``P``: none), and
    whether that subsample lies on its primitive's clip plane.
    """
    n, r, ss = k0.shape[0], k0.shape[1], k0.shape[2]
    pn = detail.shape[1] - 1
    base = torch.arange(n, device=k0.device)[:, None, None] * (pn + 1)
    pl = plane.reshape(-1, 4)

    def code(i: int, j: int) -> tuple[Tensor, Tensor, Tensor]:
        """Opaque id, transparent id and on-clip-plane of subsample (i, j) of every pixel ``[B, r, r]``."""
        a, b = k0[:, :, i, :, j], k1[:, :, i, :, j]
        hit0, hit1 = a != _MISS, b != _MISS
        t0 = (a >> 8).to(torch.int32).view(torch.float32)
        t1 = (b >> 8).to(torch.int32).view(torch.float32)
        id0 = torch.where(hit0, a & 255, torch.full_like(a, pn))
        id1 = torch.where(hit1 & (~hit0 | (t1 < t0)), b & 255, torch.full_like(b, pn))
        row = base + id0
        wx, wy = sx[None, None, :, j], sy[None, :, i, None]
        on = (pl[row, 3] + t0 * (pl[row, 0] * wx + pl[row, 1] * wy - pl[row, 2])).abs() < 2e-3
        return id0, id1, on

    c0, c1, o0 = code(0, 0)
    dt = detail.reshape(-1)
    flag = dt[base + c0] | dt[base + c1]
    for i in range(ss):
        for j in range(ss):
            if i or j:
                x0, x1, xo = code(i, j)
                flag = flag | (x0 != c0) | (x1 != c1) | (xo != o0)
    return flag, c0, c1, o0


def _adaptive_finish(prims: Primitives, keys: Tensor, shade: Callable, cam: Camera, B: int, P: int, r: int, ss: int,
                     background: Tensor, clip_all: Tensor, cuts: Tensor, a_loc: Tensor, o_loc: Tensor,
                     albedo_fn: AlbedoFn | None, fine_texture: FineFn | None, n_parts: int | None) -> RenderOutput:
    """Edge-adaptive anti-aliasing (``aa="adaptive"``) from the subsample keys of :func:`render`.

    A pixel is *simple* when its own ``ss × ss`` subsamples all see the same opaque primitive
    and the same transparent one in front (or none), that primitive is an ellipsoid without
    zones and not thin on screen (a half-axis of 2.5 pixels or more), and the subsamples are
    all on or all off its clip plane.  A simple pixel is shaded once, along the pixel-centre ray
    (its hit on that primitive); where ``fine_texture`` marks that hit, its albedo is the mean
    of ``albedo_fn`` at the pixel's subsample hits (painted detail finer than a pixel does
    not alias; the lighting, smooth there, is evaluated once).  Every other
    pixel is shaded at all its subsamples and averaged exactly as ``aa="full"`` does (the
    same bits).  Only a pixel's own subsamples decide, so a pixel whose subsamples see the
    same surfaces draws the same value (counterfactual renders stay local); the masks are
    those of ``aa="full"`` exactly (from the same subsample keys).
    """
    dev = keys.device
    res = r * ss
    RR, rr = res * res, r * r
    k0, k1 = keys[0], keys[1]
    depth = (cam.distance - prims.center[..., 2]).clamp_min(1e-6)
    thin = prims.scale.amin(-1) * (r / (2 * cam.tan_half)) / depth < 2.5
    none = torch.zeros(B, 1, dtype=torch.bool, device=dev)
    detail = torch.cat([(prims.kind != ELLIPSOID)[None, :] | (prims.zone_radius > 0).any(-1) | thin, none], 1)
    # the clip plane along each ray: n·u - h = (n·o - h) + t (nᵀA) (wx, wy, -1)
    na = torch.einsum("bpi,bpij->bpj", clip_all[..., :3], a_loc.reshape(B, P, 3, 3))
    c = torch.where(cuts, (clip_all[..., :3] * o_loc).sum(-1) - clip_all[..., 3],
                    torch.full_like(cuts, _BIG, dtype=torch.float32))
    plane = torch.cat([torch.cat([na, c[..., None]], -1), torch.zeros(B, 1, 4, device=dev)], 1)
    plane[:, P, 3] = _BIG
    sx, sy = _sub_rays(res, cam, dev)
    a_tab, o_tab, clip_tab = a_loc.reshape(B * P, 9), o_loc.reshape(B * P, 3), clip_all.reshape(B * P, 4)
    flag, c0, c1, onp = _run("aa_classify", k0.view(B, r, ss, r, ss), k1.view(B, r, ss, r, ss), detail, plane,
                             sx[:res].reshape(r, ss), sy[::res].reshape(r, ss))
    flag, c0, c1, onp = flag.reshape(-1), c0.reshape(-1), c1.reshape(-1), onp.reshape(-1)

    pc = (torch.arange(r, device=dev, dtype=torch.float32) + 0.5) / r * 2 - 1
    cx = (pc * cam.tan_half).expand(r, r).reshape(-1)
    cy = (-pc * cam.tan_half)[:, None].expand(r, r).reshape(-1)

    def centre_t(c: Tensor, flat: Tensor, bb: Tensor, pi: Tensor) -> Tensor:
        """Entry distance of the pixel-centre rays ``flat`` into their (simple, hence ellipsoid) primitives."""
        bp = bb * P + c.index_select(0, flat)
        a = a_tab.index_select(0, bp)
        o = o_tab.index_select(0, bp)
        wx, wy = cx.index_select(0, pi), cy.index_select(0, pi)
        d = [a[:, 3 * j] * wx + a[:, 3 * j + 1] * wy - a[:, 3 * j + 2] for j in range(3)]
        qa = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        qb = o[:, 0] * d[0] + o[:, 1] * d[1] + o[:, 2] * d[2]
        qc = o[:, 0] * o[:, 0] + o[:, 1] * o[:, 1] + o[:, 2] * o[:, 2] - 1
        t = (-qb - (qb * qb - qa * qc).clamp_min(0).sqrt()) / qa
        cl = clip_tab.index_select(0, bp)  # all subsamples on the clip plane: the plane's distance
        nd = cl[:, 0] * d[0] + cl[:, 1] * d[1] + cl[:, 2] * d[2]
        no = cl[:, 0] * o[:, 0] + cl[:, 1] * o[:, 1] + cl[:, 2] * o[:, 2]
        tp = (cl[:, 3] - no) / torch.where(nd.abs() < 1e-12, torch.full_like(nd, 1e-12), nd)
        return torch.where(onp.index_select(0, flat), tp, t)

    simple0 = ((~flag) & (c0 != P)).nonzero().flatten()
    bb0 = simple0 // rr
    pi0 = simple0 - bb0 * rr
    tc0 = centre_t(c0, simple0, bb0, pi0)
    afn = albedo_fn
    sx_all, sy_all = sx, sy
    if fine_texture is not None and albedo_fn is not None and simple0.numel():
        # fine painted texture on a simple pixel: the albedo is the mean of the hook's albedo at
        # the pixel's subsample hits (lighting once, at the centre: it is smooth there)
        point = torch.stack([tc0 * cx.index_select(0, pi0), tc0 * cy.index_select(0, pi0), cam.distance - tc0], -1)
        sel = fine_texture(point, prims.part.index_select(0, c0.index_select(0, simple0)), bb0).nonzero().flatten()
        if sel.numel():
            sb, sp = bb0.index_select(0, sel), pi0.index_select(0, sel)
            py, px = sp // r, sp - (sp // r) * r
            pts = []
            for i in range(ss):
                for j in range(ss):
                    spi = (py * ss + i) * res + px * ss + j
                    ts = (k0.index_select(0, sb * RR + spi) >> 8).to(torch.int32).view(torch.float32)
                    pts.append(torch.stack([ts * sx_all.index_select(0, spi), ts * sy_all.index_select(0, spi),
                                            cam.distance - ts], -1))

            def afn(albedo: Tensor, part: Tensor, point: Tensor, normal: Tensor, bi: Tensor) -> Tensor:
                out = albedo_fn(albedo, part, point, normal, bi)
                a, pa, nm, bs = (x.index_select(0, sel) for x in (albedo, part, normal, bi))
                acc = None
                for q in pts:
                    v = albedo_fn(a, pa, q, nm, bs)
                    acc = v if acc is None else acc + v
                return out.index_copy(0, sel, acc / (ss * ss))

    # simple pixels: once, along the centre ray
    bgy_c = cy / cam.tan_half
    image = (background[:, None, :] * (1.0 + 0.12 * bgy_c[None, :, None])).reshape(B * rr, 3).contiguous()
    if simple0.numel():
        shade(0, simple0, bb0, pi0, c0.index_select(0, simple0), tc0, cx, cy, image, None, afn)
    simple1 = ((~flag) & (c1 != P)).nonzero().flatten()
    if simple1.numel():
        bb1 = simple1 // rr
        pi1 = simple1 - bb1 * rr
        shade(1, simple1, bb1, pi1, c1.index_select(0, simple1), centre_t(c1, simple1, bb1, pi1), cx, cy, image, None)

    # flagged pixels: every subsample, into a compact buffer, averaged as aa="full" does
    fidx = flag.nonzero().flatten()
    if fidx.numel():
        n = fidx.numel()
        fb = fidx // rr
        fp = fidx - fb * rr
        fy, fx = fp // r, fp - (fp // r) * r
        off = torch.arange(ss, device=dev)
        sy_i = (fy[:, None] * ss + off)[:, :, None].expand(n, ss, ss)
        sx_i = (fx[:, None] * ss + off)[:, None, :].expand(n, ss, ss)
        spi = (sy_i * res + sx_i).reshape(-1)  # subsample index within its image
        sb = fb.repeat_interleave(ss * ss)
        g = sb * RR + spi
        bgy = (-((torch.arange(res, device=dev, dtype=torch.float32) + 0.5) / res * 2 - 1) * cam.tan_half
               / cam.tan_half).index_select(0, sy_i.reshape(-1))
        sub_img = (background.index_select(0, sb) * (1.0 + 0.12 * bgy[:, None])).contiguous()
        kk0, kk1 = k0.index_select(0, g), k1.index_select(0, g)
        h0 = kk0 != _MISS
        t0 = (kk0 >> 8).to(torch.int32).view(torch.float32)
        t1 = (kk1 >> 8).to(torch.int32).view(torch.float32)
        h1 = (kk1 != _MISS) & (~h0 | (t1 < t0))
        for layer, h, kk, t in ((0, h0, kk0, t0), (1, h1, kk1, t1)):
            rows = h.nonzero().flatten()
            if rows.numel():
                shade(layer, rows, sb.index_select(0, rows), spi.index_select(0, rows), kk.index_select(0, rows) & 255,
                      t.index_select(0, rows), sx, sy, sub_img, None)
        x = sub_img.clamp_(0, 1).view(n, ss * ss, 3)
        acc = x[:, 0]
        for i in range(1, ss * ss):
            acc = acc + x[:, i]
        image.index_copy_(0, fidx, acc / (ss * ss))
    img = image.clamp_(0, 1).view(B, r, r, 3).permute(0, 3, 1, 2).contiguous()
    coverage = None
    if n_parts:
        hit0, hit1 = k0 != _MISS, k1 != _MISS
        t0 = (k0 >> 8).to(torch.int32).view(torch.float32)
        t1 = (k1 >> 8).to(torch.int32).view(torch.float32)
        front = hit1 & (~hit0 | (t1 < t0))
        part_map = torch.where(front, prims.part.index_select(0, (k1 & 255).clamp_max(P - 1)),
                               torch.where(hit0, prims.part.index_select(0, (k0 & 255).clamp_max(P - 1)),
                                           torch.zeros_like(k0)))
        oh = F.one_hot(part_map.view(B, RR), n_parts).to(torch.float32)
        oh = rearrange(oh, "b (h w) k -> b k h w", h=res)
        coverage = F.avg_pool2d(oh, ss)
    return RenderOutput(image=img, coverage=coverage)


def _sub_rays(res: int, cam: Camera, dev: torch.device) -> tuple[Tensor, Tensor]:
    pix = (torch.arange(res, device=dev, dtype=torch.float32) + 0.5) / res * 2 - 1
    return (pix * cam.tan_half).expand(res, res).reshape(-1), (-pix * cam.tan_half)[:, None].expand(res, res).reshape(-1)


# -- the compiled path -----------------------------------------------------------------------------
# The same arithmetic as the eager path, written so that torch.compile (inductor) fuses each
# stage into one loop over (pair, ray) or (hit): no [pairs × rays] temporaries, ~10-20× less
# time than eager on a CPU.  Inductor's float sqrt is correctly rounded where eager's vectorised
# sqrt is not always, so the two paths can differ in the last bit of a distance or a normal
# (pixels differ by ~1e-7, and in rare near-ties of two surfaces' depths): a given backend
# renders the same bits on every run, and the cache records which backend filled it.


def _keys_all(bp: Tensor, p: Tensor, tx: Tensor, ty: Tensor, o_tab: Tensor, a_tab: Tensor, col_x: Tensor,
              row_y: Tensor, clip_tab: Tensor, kind_tab: Tensor) -> Tensor:
    """Sort keys ``[N, T*T]`` of ``N`` (image·P + primitive ``bp``, tile) pairs, every kind at once.

    Per pair, the arithmetic of :func:`_intervals` for its kind (selected with ``where``);
    the per-pair rows are gathered here so that the compiled loop reads them directly.
    """
    o, a, clip, kind = o_tab[bp], a_tab[bp], clip_tab[bp], kind_tab[p]
    cx, ry = col_x[tx], row_y[ty]
    n, tl = cx.shape
    cx = cx[:, None, :]
    ry = ry[:, :, None]
    dx, dy, dz = (a[:, 3 * j, None, None] * cx + a[:, 3 * j + 1, None, None] * ry - a[:, 3 * j + 2, None, None]
                  for j in range(3))
    ox, oy, oz = (o[:, i, None, None] for i in range(3))
    kd = kind[:, None, None]

    a0, a1 = _slab(ox, dx)
    b0, b1 = _slab(oy, dy)
    c0, c1 = _slab(oz, dz)
    ell = kd == ELLIPSOID
    s2 = dx * dx + dy * dy
    qa = torch.where(ell, s2 + dz * dz, s2.clamp_min(1e-12))
    b2 = ox * dx + oy * dy
    qb = torch.where(ell, b2 + oz * dz, b2)
    c2 = ox * ox + oy * oy
    qc = torch.where(ell, c2 + oz * oz - 1, c2 - 1)
    disc = qb * qb - qa * qc
    root = disc.clamp_min(0).sqrt()
    t0q = (-qb - root) / qa
    t1q = torch.where(disc >= 0, (-qb + root) / qa, t0q - 1)
    cyl = kd == CYLINDER
    box = kd == BOX
    t0 = torch.where(box, torch.maximum(torch.maximum(a0, b0), c0), torch.where(cyl, torch.maximum(t0q, c0), t0q))
    t1 = torch.where(box, torch.minimum(torch.minimum(a1, b1), c1), torch.where(cyl, torch.minimum(t1q, c1), t1q))
    n0, n1, n2, h = (clip[:, i, None, None] for i in range(4))
    nd = n0 * dx + n1 * dy + n2 * dz
    no = n0 * ox + n1 * oy + n2 * oz
    safe = torch.where(nd.abs() < 1e-12, torch.full_like(nd, 1e-12), nd)
    tp = (h - no) / safe
    inside = no <= h
    t0 = torch.where(nd < -1e-12, torch.maximum(t0, tp), t0)
    t1 = torch.where(nd > 1e-12, torch.minimum(t1, tp), t1)
    t1 = torch.where((nd.abs() <= 1e-12) & ~inside, t0 - 1, t1)
    hit = (t0 <= t1) & (t0 > 0)
    key = (t0.clamp_min(0).view(torch.int32).to(torch.int64) << 8) | p[:, None, None]
    return torch.where(hit, key, torch.full_like(key, _MISS)).reshape(n, tl * tl)


def _surface(bp: Tensor, p: Tensor, pi: Tensor, t: Tensor, ray_x: Tensor, ray_y: Tensor, cam_d: float,
             tabs: tuple[Tensor, ...], kind_tab: Tensor) -> tuple[Tensor, ...]:
    """Hit point, unit normal, zone masks and base albedo of ``M`` hits (the render loop's geometry).

    ``tabs``: the ``[B*P, k]`` rows rotation (9), scale, center, clip, zone_radius, zone_color (6),
    color.  Written per component (no 3-wide reductions, argmax or one-hot) so that inductor
    emits one vectorised loop; same formulas as the eager loop.
    """
    rot, sc, center, clip, zr, zc, color = (x[bp] for x in tabs)
    kind = kind_tab[p]
    rx, ry = ray_x[pi], ray_y[pi]
    px, py, pz = t * rx, t * ry, cam_d - t
    vx, vy, vz = px - center[:, 0], py - center[:, 1], pz - center[:, 2]
    r = [rot[:, i] for i in range(9)]  # row-major
    s0, s1, s2 = (sc[:, i].clamp_min(1e-8) for i in range(3))
    u0 = (r[0] * vx + r[3] * vy + r[6] * vz) / s0
    u1 = (r[1] * vx + r[4] * vy + r[7] * vz) / s1
    u2 = (r[2] * vx + r[5] * vy + r[8] * vz) / s2
    rho = (u0 * u0 + u1 * u1).sqrt()
    zero = torch.zeros_like(u0)
    cyl, box = kind == CYLINDER, kind == BOX
    cap = cyl & (u2.abs() > rho)
    side = cyl & ~cap
    n0 = torch.where(cap, zero, u0)
    n1 = torch.where(cap, zero, u1)
    n2 = torch.where(cap, u2.sign(), torch.where(side, zero, u2))
    a0, a1, a2 = u0.abs(), u1.abs(), u2.abs()
    x_big = (a0 >= a1) & (a0 >= a2)  # argmax: the first of equal maxima
    y_big = ~x_big & (a1 >= a2)
    z_big = ~x_big & ~y_big
    n0 = torch.where(box, torch.where(x_big, u0.sign(), zero), n0)
    n1 = torch.where(box, torch.where(y_big, u1.sign(), zero), n1)
    n2 = torch.where(box, torch.where(z_big, u2.sign(), zero), n2)
    c0, c1, c2, ch = (clip[:, i] for i in range(4))
    on_clip = ((u0 * c0 + u1 * c1 + u2 * c2 - ch).abs() < 2e-3) & ((c0.abs() + c1.abs() + c2.abs()) > 0)
    n0, n1, n2 = torch.where(on_clip, c0, n0), torch.where(on_clip, c1, n1), torch.where(on_clip, c2, n2)
    w0, w1, w2 = n0 / s0, n1 / s1, n2 / s2
    g0 = r[0] * w0 + r[1] * w1 + r[2] * w2
    g1 = r[3] * w0 + r[4] * w1 + r[5] * w2
    g2 = r[6] * w0 + r[7] * w1 + r[8] * w2
    inv = 1.0 / (g0 * g0 + g1 * g1 + g2 * g2).sqrt().clamp_min(1e-12)
    front_side = u2 > 0
    z1 = front_side & (rho < zr[:, 0])
    z2 = front_side & (rho < zr[:, 1])
    albedo = torch.where(z1[:, None], zc[:, 0:3], color)
    albedo = torch.where(z2[:, None], zc[:, 3:6], albedo)
    point = torch.stack([px, py, pz], -1)
    normal = torch.stack([g0 * inv, g1 * inv, g2 * inv], -1)
    return point, normal, z1, z2, albedo


def _lighting(bi: Tensor, bp: Tensor, pi: Tensor, normal: Tensor, albedo: Tensor, ray_x: Tensor, ray_y: Tensor,
              ldir_tab: Tensor, amb_tab: Tensor, shine_tab: Tensor, lcol_tab: Tensor) -> Tensor:
    """Lambert + ambient + Blinn–Phong of ``M`` hits (the render loop's shading), per component."""
    ldir, amb, shine, lcol = ldir_tab[bi], amb_tab[bi], shine_tab[bp], lcol_tab[bi]
    l0, l1, l2 = ldir[:, 0], ldir[:, 1], ldir[:, 2]
    m0, m1, m2 = normal[:, 0], normal[:, 1], normal[:, 2]
    lam = (m0 * l0 + m1 * l1 + m2 * l2).clamp_min(0)
    v0, v1 = -ray_x[pi], -ray_y[pi]
    iv = 1.0 / (v0 * v0 + v1 * v1 + 1.0).sqrt()
    h0, h1, h2 = l0 + v0 * iv, l1 + v1 * iv, l2 + iv
    ih = 1.0 / (h0 * h0 + h1 * h1 + h2 * h2).sqrt().clamp_min(1e-12)
    spec = ((m0 * h0 + m1 * h1 + m2 * h2) * ih).clamp_min(0).pow(24) * shine * (lam > 0)
    return (albedo * (amb + (1 - amb) * lam)[:, None] + spec[:, None]) * lcol


def _blend(bp: Tensor, alpha_tab: Tensor, z1: Tensor, z2: Tensor, color: Tensor, under: Tensor) -> Tensor:
    alpha3 = alpha_tab[bp]
    alpha = torch.where(z2, alpha3[:, 2], torch.where(z1, alpha3[:, 1], alpha3[:, 0]))[:, None]
    return alpha * color + (1 - alpha) * under


_FUNCS.update(keys=_keys_all, surface=_surface, lighting=_lighting, blend=_blend, aa_classify=_aa_classify)
