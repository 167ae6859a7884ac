"""synthchairs: procedural chairs rendered like the 3D-chairs dataset (TD-GAN's experiment).

Each identity is one chair model built from boxes and cylinders — seat (square or round),
a back (solid panel, vertical slats or horizontal rails, with its own height and tilt),
a base (four legs, a pedestal with a five-star foot, or sled runners), optional
armrests, and materials.  Every chair is seen from 31 azimuths (360°/31 apart) × 2
elevations (20°, 30°) on a white background, like the 3D-chairs renders; labels are
``identity``, ``view`` (azimuth index 0..30), ``elevation`` (0..1) and ``light``.

Sample ``i`` of a ``(split, seed, resolution)`` is the same image on every run: the
split's grid of (chair, elevation, view) is visited in a fixed order, and every chair's
shape is a hash of ``(seed, identity)``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from gancore.data.base import DataConfig
from .render import BOX, CYLINDER, Camera, Light, RenderOutput, SceneBuilder, render, rotation
from .synthfaces import SynthSource, _coprime_stride, _key, uniform

__all__ = ["SynthChairs", "CHAIR_PARTS", "N_VIEWS", "ELEVATIONS"]

N_VIEWS = 31
ELEVATIONS = (20.0, 30.0)
N_LIGHTS = 4
CHAIR_PARTS = ("background", "seat", "back", "base", "arms")
_BG, _SEAT, _BACK, _BASE, _ARMS = range(len(CHAIR_PARTS))
_LEGS, _PEDESTAL, _SLED = range(3)
_PANEL, _SLATS, _RAILS = range(3)

MATERIALS = torch.tensor(
    [
        [0.55, 0.35, 0.18],  # wood
        [0.75, 0.58, 0.38],  # light wood
        [0.12, 0.12, 0.13],  # black
        [0.85, 0.85, 0.82],  # white
        [0.65, 0.12, 0.10],  # red
        [0.15, 0.28, 0.60],  # blue
        [0.45, 0.47, 0.50],  # grey
        [0.25, 0.45, 0.25],  # green
        [0.80, 0.62, 0.20],  # mustard
    ]
)
_LIGHT_DIRS = torch.tensor([[0.5, 0.8, 0.6], [-0.5, 0.8, 0.6], [0.0, 0.6, 1.0], [0.8, 0.4, 0.2]])
CAMERA = Camera(distance=10.0, fov=9.5)
CHAIR_FACTORS = (
    "identity", "seat_w", "seat_d", "seat_t", "seat_h", "round_seat", "back_h", "back_tilt", "back_style", "slats",
    "base", "leg_t", "leg_round", "leg_splay", "arms", "seat_color", "frame_color", "view", "elevation", "light",
)
_LONG = {"identity", "round_seat", "back_style", "slats", "base", "leg_round", "arms", "seat_color", "frame_color",
         "view", "elevation", "light"}


def _chair_factors(seed: int, ids: Tensor) -> dict[str, Tensor]:
    """Shape and material of chairs ``ids``: a pure function of ``(seed, identity)``."""
    u = uniform(_key("synthchairs", seed, "identity"), ids, 20)
    n_mat = len(MATERIALS)
    return dict(
        seat_w=0.42 + 0.22 * u[:, 0],
        seat_d=0.38 + 0.2 * u[:, 1],
        seat_t=0.03 + 0.06 * u[:, 2],
        seat_h=0.36 + 0.16 * u[:, 3],
        round_seat=(u[:, 4] < 0.2).long(),
        back_h=0.3 + 0.45 * u[:, 5],
        back_tilt=-2 + 20 * u[:, 6],
        back_style=(u[:, 7] * 3).long().clamp(max=2),
        slats=3 + (u[:, 8] * 3).long().clamp(max=2),
        base=torch.bucketize(u[:, 9].contiguous(), torch.tensor([0.6, 0.82])),
        leg_t=0.018 + 0.03 * u[:, 10],
        leg_round=(u[:, 11] < 0.4).long(),
        leg_splay=6 * u[:, 12],
        arms=(u[:, 13] < 0.35).long(),
        seat_color=(u[:, 14] * n_mat).long().clamp(max=n_mat - 1),
        frame_color=(u[:, 15] * n_mat).long().clamp(max=n_mat - 1),
    )


class SynthChairs(SynthSource):
    """Procedural chairs × 31 azimuths × 2 elevations (see the module docstring).

    Same methods as :class:`~gancore_synth.synthfaces.SynthFaces`: ``labels()``,
    ``load(indices)``, ``factors(indices)``, ``render(factors, masks=False)``; masks are
    named by :data:`CHAIR_PARTS`.
    """

    class Config(DataConfig):
        seed: int = Field(0, ge=0, description="dataset seed: same seed, same images")
        size: int | None = Field(
            None, ge=1, description="samples in the split; None: every chair × 62 views of the split"
        )
        identities: int | None = Field(None, ge=1, description="chairs in the train split (test: a fifth); None: 300")
        test_identities: int | None = Field(
            None, ge=2, description="chairs in the test split, none of them in the train split; None: a fifth of identities"
        )
        cache: str | None = Field(None, description="directory for a memory-mapped uint8 cache of rendered images")
        supersample: int = Field(2, ge=1, le=4, description="anti-aliasing subsamples per pixel side")
        aa: Literal["full", "adaptive"] = Field(
            "full", description="anti-aliasing: every pixel supersampled, or only pixels with edges (see render)"
        )
        device: str = Field("cpu", description="torch device that renders (images are returned on the CPU)")

    provides: ClassVar[tuple[str, ...]] = ("identity", "view", "elevation", "light", "azimuth")
    name: ClassVar[str] = "synthchairs"
    parts: ClassVar[tuple[str, ...]] = CHAIR_PARTS

    def _default_ids(self) -> int:
        return 300

    def _grid_total(self, split: str) -> int:
        return self._ids(split)[0] * N_VIEWS * len(ELEVATIONS)

    def _split_size(self, split: str) -> int:
        c = self.config
        if c.size is not None and (c.split == split or (c.split == "all" and split == "train")):
            return c.size
        return self._grid_total(split)

    def _split_factors(self, split: str, idx: Tensor) -> dict[str, Tensor]:
        c = self.config
        n_ids, offset = self._ids(split)
        total = self._grid_total(split)
        g = idx if self._split_size(split) == total else (idx * _coprime_stride(total)) % total
        view, g = g % N_VIEWS, g // N_VIEWS
        elev, local = g % len(ELEVATIONS), g // len(ELEVATIONS)
        ids = local + offset
        f = _chair_factors(c.seed, ids)
        u = uniform(_key("synthchairs", c.seed, split, "sample"), idx, 2)
        f.update(identity=ids, view=view, elevation=elev, light=(u[:, 0] * N_LIGHTS).long().clamp(max=N_LIGHTS - 1))
        return f

    def _labels_of(self, f: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {k: v.clone() for k, v in f.items()}
        out["azimuth"] = f["view"].float() * (360.0 / N_VIEWS)
        return out

    def _draw(self, f: dict[str, Tensor], masks: bool) -> RenderOutput:
        missing = sorted(set(CHAIR_FACTORS) - set(f))
        if missing:
            raise ValueError(f"synthchairs.render: factors lack {', '.join(missing)} (take them from .factors(indices))")
        return render_chairs(f, self.config.resolution, self.config.supersample, self.device, masks, self.config.aa)


def render_chairs(f: dict[str, Tensor], resolution: int, supersample: int, device: torch.device, masks: bool,
                  aa: str = "full"):
    """Build the primitives of chairs ``f`` and ray-cast them (images in [0, 1])."""
    dev = device
    b = max(torch.as_tensor(v).reshape(-1).shape[0] for v in f.values())
    f = {k: torch.as_tensor(v).reshape(-1).expand(b).to(dev) for k, v in f.items()}
    fl = {k: v.float() for k, v in f.items()}
    zeros = torch.zeros(b, device=dev)

    def V(*cols: Tensor | float) -> Tensor:
        return torch.stack([torch.as_tensor(c, dtype=torch.float32, device=dev).expand(b) for c in cols], -1)

    mats = MATERIALS.to(dev)
    seat_col, frame_col = mats[f["seat_color"]], mats[f["frame_color"]]
    w, d, t, h = fl["seat_w"] / 2, fl["seat_d"] / 2, fl["seat_t"] / 2, fl["seat_h"]
    round_seat = f["round_seat"] > 0
    sb = SceneBuilder(b, dev)
    # seat at height h (floor at y = 0), front towards +z
    sb.add("seat_box", BOX, _SEAT, V(0.0, h, 0.0), torch.stack([w, t, d], -1), seat_col, visible=~round_seat)
    sb.add("seat_round", CYLINDER, _SEAT, V(0.0, h, 0.0), torch.stack([w, w, t], -1), seat_col,
           rot=rotation(zeros, torch.full((b,), 90.0)), visible=round_seat)

    # back: hinged at the seat's rear edge, tilted backwards by back_tilt
    bh = fl["back_h"] / 2
    tilt = fl["back_tilt"]
    rot_b = rotation(zeros, -tilt)  # negative pitch leans the top (+y) back (−z)
    ty = torch.deg2rad(tilt)

    def on_back(x: Tensor | float, y: Tensor) -> Tensor:
        """A point ``y`` up the back's plane (from the seat top), ``x`` across."""
        return V(x, h + t + y * torch.cos(ty), -d + 0.02 - y * torch.sin(ty))

    style = f["back_style"]
    bw = w * 0.96
    sb.add("back_panel", BOX, _BACK, on_back(0.0, bh), torch.stack([bw, bh, zeros + 0.025], -1), seat_col,
           rot=rot_b, visible=style == _PANEL)
    sb.add("back_rail", BOX, _BACK, on_back(0.0, 2 * bh - 0.04), torch.stack([bw, zeros + 0.04, zeros + 0.03], -1),
           frame_col, rot=rot_b, visible=style != _PANEL)
    n_sl = fl["slats"]
    for i in range(5):
        # vertical slats (slats style) spread across the back; horizontal rails (rails style) up it
        x = (-1 + 2 * (i + 0.5) / n_sl) * bw * 0.85
        sb.add(f"slat{i}", BOX, _BACK, on_back(x, bh - 0.02), torch.stack([zeros + 0.025, bh - 0.02, zeros + 0.018], -1),
               frame_col, rot=rot_b, visible=(style == _SLATS) & (i < f["slats"]))
        y = (i + 0.5) / n_sl * (2 * bh - 0.08)
        sb.add(f"rail{i}", BOX, _BACK, on_back(0.0, y), torch.stack([bw, zeros + 0.02, zeros + 0.018], -1),
               frame_col, rot=rot_b, visible=(style == _RAILS) & (i < f["slats"] - 1))
    for sgn, nm in ((1, "r"), (-1, "l")):  # back posts for slat and rail backs
        sb.add(f"post_{nm}", BOX, _BACK, on_back(sgn * bw, bh), torch.stack([zeros + 0.03, bh, zeros + 0.03], -1),
               frame_col, rot=rot_b, visible=style != _PANEL)

    # base
    base = f["base"]
    lt = fl["leg_t"]
    leg_round = f["leg_round"] > 0
    splay = fl["leg_splay"]
    for sx, sz, nm in ((1, 1, "fr"), (-1, 1, "fl"), (1, -1, "br"), (-1, -1, "bl")):
        c = V(sx * (w - lt), h / 2, sz * (d - lt))
        rot_l = rotation(zeros, sz * splay, -sx * splay)
        vis = base == _LEGS
        sb.add(f"leg_{nm}", BOX, _BASE, c, torch.stack([lt, h / 2, lt], -1), frame_col, rot=rot_l,
               visible=vis & ~leg_round)
        sb.add(f"legc_{nm}", CYLINDER, _BASE, c, torch.stack([lt, lt, h / 2], -1), frame_col,
               rot=rot_l @ rotation(zeros, torch.full((b,), 90.0)), visible=vis & leg_round)
    ped = base == _PEDESTAL
    sb.add("pedestal", CYLINDER, _BASE, V(0.0, h / 2, 0.0), torch.stack([zeros + 0.035, zeros + 0.035, h / 2], -1),
           frame_col, rot=rotation(zeros, torch.full((b,), 90.0)), visible=ped)
    for i in range(5):
        yaw = torch.full((b,), 72.0 * i + 18)
        rr = rotation(yaw)
        sb.add(f"star{i}", BOX, _BASE, (rr @ V(0.0, 0.03, 0.2)[..., None])[..., 0], V(0.025, 0.025, 0.2), frame_col,
               rot=rr, visible=ped)
    sled = base == _SLED
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"runner_{nm}", BOX, _BASE, V(sgn * (w - 0.02), 0.015, 0.0), torch.stack([zeros + 0.02, zeros + 0.015, d + 0.05], -1),
               frame_col, visible=sled)
        sb.add(f"upright_{nm}", BOX, _BASE, V(sgn * (w - 0.02), h / 2, 0.0), torch.stack([zeros + 0.02, h / 2, d * 0.8], -1),
               frame_col, visible=sled)

    # armrests
    arms = f["arms"] > 0
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"arm_{nm}", BOX, _ARMS, V(sgn * (w + 0.03), h + 0.24, -0.02), torch.stack([zeros + 0.035, zeros + 0.02, d * 0.9], -1),
               frame_col, visible=arms)
        sb.add(f"armpost_{nm}", BOX, _ARMS, V(sgn * (w + 0.03), h + 0.12, d * 0.6), V(0.02, 0.12, 0.02), frame_col,
               visible=arms)

    prims = sb.build()
    az = fl["view"] * (360.0 / N_VIEWS)
    el = torch.tensor(ELEVATIONS, device=dev)[f["elevation"]]
    # chair centre to the origin, spin by azimuth, tilt towards the camera by the elevation
    prims = prims.transformed(torch.eye(3, device=dev).expand(b, 3, 3), V(0.0, -0.55, 0.0))
    prims = prims.transformed(rotation(zeros, -el) @ rotation(az), V(0.0, 0.0, 0.0))
    light = Light(_LIGHT_DIRS.to(dev)[f["light"]], torch.full((b,), 0.45, device=dev))
    bg = torch.full((b, 3), 0.97, device=dev)
    return render(prims, light, bg, resolution=resolution, supersample=supersample, camera=CAMERA,
                  n_parts=len(CHAIR_PARTS) if masks else None, **(dict(aa=aa) if aa != "full" else {}))
