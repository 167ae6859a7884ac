"""synthfaces: procedurally generated 3D faces with ground-truth factors.

No face dataset can be downloaded, so gancore ships faces built from analytic primitives
(:mod:`.render`) whose every factor is known: an edit can be compared with the *true*
counterfactual render (same face, one factor changed), which no real dataset allows.

Sample ``i`` of a given ``(profile, split, seed, resolution)`` is the same image on every
run and machine: factors come from a counter-based hash of ``(seed, profile, split, i)``
(integer arithmetic only), never from global RNG state or Python's ``hash``.

Profiles mimic the datasets of the papers gancore reproduces:

* ``celeba`` — near-frontal (yaw ±10°), aligned; binary attributes at 30–50 % positives.
* ``utkface`` — ages spread 0–85 for every identity, near-frontal.
* ``multipie`` — a fixed set of identities × 13 poses (−90°..90°, 15° steps) × 20 lights ×
  4 expressions; label ``pose`` is the pose index 0..12.  ``poses = "drgan9"`` keeps the 9
  poses within ±60° (DR-GAN's CVPR protocol; ``pose`` 0..8), or a list of yaws in degrees.
  As in Multi-PIE's studio, the backdrop is one for everyone (``backdrop = "random"`` draws
  it per image, as the other profiles do and as this profile did before); clothes stay drawn
  per image, like a subject's changing clothes across Multi-PIE's sessions, so that they are
  not an identity cue.
* ``free`` — every factor random, yaw −90°..90°.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from gancore.data.base import DataConfig, DataError, DataSource
from .render import (
    BOX, CYLINDER, ELLIPSOID, Camera, Light, RenderOutput, SceneBuilder, compiled_stage, render, render_backend,
    rotation,
)

__all__ = ["SynthFaces", "SynthSource", "PARTS", "AGE_GROUP_EDGES", "age_group", "face_labels"]

#: mask part ids (index = part id).
PARTS = ("background", "face", "eyes", "mouth", "hair", "beard", "glasses", "body")
BG, SKIN, EYES, MOUTH, HAIR, BEARD, GLASSES, BODY = range(len(PARTS))

#: first age (years) of CAAE age groups 1..9 (group 0 is 0–5).
AGE_GROUP_EDGES = (6, 11, 16, 21, 31, 41, 51, 61, 71)

SKIN_TONES = torch.tensor(
    [
        [0.97, 0.82, 0.71],
        [0.93, 0.73, 0.60],
        [0.82, 0.60, 0.45],
        [0.70, 0.50, 0.34],
        [0.53, 0.35, 0.23],
        [0.36, 0.23, 0.15],
    ]
)
#: base hair colours: black, brown, blond, red (grey comes with age; label 4).
HAIR_COLORS = torch.tensor([[0.07, 0.06, 0.06], [0.33, 0.19, 0.09], [0.88, 0.72, 0.40], [0.62, 0.24, 0.09]])
GREY = torch.tensor([0.80, 0.80, 0.80])
EYE_COLORS = torch.tensor(
    [[0.33, 0.19, 0.08], [0.16, 0.09, 0.05], [0.22, 0.45, 0.80], [0.25, 0.52, 0.30], [0.52, 0.40, 0.18], [0.48, 0.55, 0.62]]
)
BACKGROUNDS = torch.tensor(
    [
        [0.75, 0.78, 0.82],
        [0.62, 0.70, 0.80],
        [0.82, 0.78, 0.68],
        [0.60, 0.72, 0.62],
        [0.45, 0.48, 0.55],
        [0.88, 0.88, 0.86],
        [0.70, 0.62, 0.70],
        [0.55, 0.62, 0.60],
    ]
)
CLOTHES = torch.tensor(
    [[0.15, 0.20, 0.40], [0.60, 0.10, 0.12], [0.20, 0.40, 0.25], [0.85, 0.85, 0.85], [0.15, 0.15, 0.15], [0.55, 0.45, 0.30]]
)
FRAMES = torch.tensor([[0.04, 0.04, 0.05], [0.20, 0.08, 0.04], [0.05, 0.07, 0.22]])
LENS_TINTS = torch.tensor([[0.30, 0.42, 0.60], [0.50, 0.38, 0.22], [0.35, 0.35, 0.38]])

N_LIGHTS = 20
N_POSES = 13
N_EXPRESSIONS = 4  # smile + 2 * mouth_open: neutral, smile, open (surprise), open smile (laugh)


def _light_table() -> tuple[Tensor, Tensor]:
    """Directions ``[20, 3]`` and ambient ``[20]`` of the 20 illuminations, left to right."""
    i = torch.arange(N_LIGHTS, dtype=torch.float32)
    az = torch.deg2rad(-80 + i * 160 / (N_LIGHTS - 1))
    el = torch.deg2rad(torch.where(i % 2 == 0, 10.0, 35.0))
    d = torch.stack([az.sin() * el.cos(), el.sin(), az.cos() * el.cos()], -1)
    amb = 0.38 + 0.07 * (i % 3 == 0)
    return d, amb


LIGHT_DIRS, LIGHT_AMBIENT = _light_table()

# -- counter-based randomness ---------------------------------------------------------------
_M32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (values kept below 2**32 so int64 products never overflow)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


def _key(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def uniform(key: int, index: Tensor, count: int) -> Tensor:
    """``[N, count]`` uniforms in [0, 1), a pure function of ``(key, index, column)``."""
    idx = index.to(torch.int64).reshape(-1, 1)
    col = torch.arange(count, dtype=torch.int64, device=idx.device)
    x = _mix((idx & _M32) ^ key)
    x = _mix(x ^ _mix(col + 0x9E3779B9 * 0 + (key >> 7) + 1))
    x = _mix(x ^ (idx >> 32))
    return (x >> 8).to(torch.float32) / float(1 << 24)


# -- labels -----------------------------------------------------------------------------------
def age_group(age: Tensor) -> Tensor:
    """CAAE age groups 0–5, 6–10, 11–15, 16–20, 21–30, 31–40, 41–50, 51–60, 61–70, 71+ → 0..9."""
    edges = torch.tensor(AGE_GROUP_EDGES, dtype=torch.float32, device=age.device)
    return torch.bucketize(age.floor().contiguous(), edges, right=True)


def _grey(age: Tensor, rate: Tensor) -> Tensor:
    return ((age - 32) / 38 * rate).clamp(0, 1)


def _recede(age: Tensor, gender: Tensor, propensity: Tensor) -> Tensor:
    male = propensity * ((age - 22) / 30).clamp(0, 1) * 1.15
    female = 0.25 * propensity * ((age - 55) / 30).clamp(0, 1)
    return torch.where(gender.to(torch.bool), female, male).clamp(0, 1)


def face_labels(f: dict[str, Tensor]) -> dict[str, Tensor]:
    """All labels of samples with factors ``f`` (the factors themselves plus derived labels)."""
    long = torch.long
    age = f["age"].float()
    grey = _grey(age, f["grey_rate"])
    recede = _recede(age, f["gender"], f["baldness"])
    gray = grey > 0.5
    bald = recede > 0.8
    base = f["hair_color"].long()
    hair_label = torch.where(gray, torch.full_like(base, 4), base)
    glasses = f["glasses"].long()
    male = 1 - f["gender"].long()
    yaw = f["yaw"].float()
    out = {k: v.clone() for k, v in f.items()}
    out.update(
        identity=f["identity"].long(),
        age=age,
        age_group=age_group(age),
        gender=f["gender"].long(),
        smile=f["smile"].long(),
        mouth_open=f["mouth_open"].long(),
        eyeglasses=(glasses == 1).to(long),
        sunglasses=(glasses == 2).to(long),
        beard=f["beard"].long(),
        moustache=f["moustache"].long(),
        hair_color=hair_label,
        yaw=yaw,
        pitch=f["pitch"].float(),
        pose=((yaw + 90) / 15).round().clamp(0, N_POSES - 1).to(long),
        light=f["light"].long(),
        expression=(f["smile"].long() + 2 * f["mouth_open"].long()),
        Eyeglasses=(glasses > 0).to(long),
        Smiling=f["smile"].long(),
        Mouth_Slightly_Open=f["mouth_open"].long(),
        Male=male,
        No_Beard=1 - f["beard"].long(),
        Mustache=f["moustache"].long(),
        Bangs=f["bangs"].long(),
        Black_Hair=((hair_label == 0) & ~bald).to(long),
        Brown_Hair=((hair_label == 1) & ~bald).to(long),
        Blond_Hair=((hair_label == 2) & ~bald).to(long),
        Gray_Hair=gray.to(long),
        Young=(age < 40).to(long),
        Bald=bald.to(long),
    )
    return out


#: factor names: identity-level (a function of the identity id) and per-sample.
IDENTITY_FACTORS = (
    "gender", "skin", "skin_shade", "face_width", "face_length", "jaw_width", "chin", "eye_color", "eye_size",
    "eye_spacing", "nose_length", "nose_width", "nose_tip", "lip_full", "ear_size", "brow_thick", "brow_tilt",
    "hair_color", "hair_length", "hair_volume", "baldness", "grey_rate", "base_age",
)
SAMPLE_FACTORS = (
    "age", "glasses", "frame", "tint", "smile", "mouth_open", "beard", "moustache", "bangs", "yaw", "pitch",
    "roll", "light", "background", "clothes",
)
LONG_FACTORS = {
    "identity", "gender", "skin", "eye_color", "hair_color", "glasses", "frame", "tint", "smile", "mouth_open",
    "beard", "moustache", "bangs", "light", "background", "clothes",
}

PROFILES = ("celeba", "utkface", "multipie", "free")
_DEFAULT_IDS = {"celeba": 1000, "utkface": 4000, "multipie": 100, "free": 2000}
_DEFAULT_SIZE = {"train": 20000, "test": 2000}


def _identity_factors(seed: int, ids: Tensor) -> dict[str, Tensor]:
    """Identity-defining factors: a pure function of ``(seed, identity id)``."""
    u = uniform(_key("synthfaces", seed, "identity"), ids, 32)
    female = (u[:, 0] < 0.5).long()
    fem = female.float()
    hair_len_m = u[:, 14] * 0.35
    hair_len_f = 0.45 + u[:, 14] * 0.55
    return dict(
        gender=female,
        skin=(u[:, 1] * len(SKIN_TONES)).long().clamp(max=len(SKIN_TONES) - 1),
        skin_shade=(u[:, 2] - 0.5) * 0.12,
        face_width=0.92 + 0.14 * u[:, 3] - 0.04 * fem,
        face_length=0.94 + 0.12 * u[:, 4],
        jaw_width=0.9 + 0.2 * u[:, 5] - 0.1 * fem,
        chin=0.8 + 0.4 * u[:, 6],
        eye_color=(u[:, 7] * len(EYE_COLORS)).long().clamp(max=len(EYE_COLORS) - 1),
        eye_size=0.9 + 0.2 * u[:, 8] + 0.05 * fem,
        eye_spacing=0.92 + 0.16 * u[:, 9],
        nose_length=0.85 + 0.3 * u[:, 10] - 0.06 * fem,
        nose_width=0.85 + 0.3 * u[:, 11] - 0.08 * fem,
        nose_tip=0.7 + 0.6 * u[:, 12],
        lip_full=0.8 + 0.35 * u[:, 13] + 0.2 * fem,
        hair_length=torch.where(female.bool(), hair_len_f, hair_len_m),
        hair_volume=0.03 + 0.1 * u[:, 15] + 0.04 * fem,
        ear_size=0.85 + 0.3 * u[:, 16],
        brow_thick=(0.9 + 0.5 * u[:, 17]) * (1 - 0.3 * fem),
        brow_tilt=-6 + 14 * u[:, 18],
        hair_color=torch.bucketize(u[:, 19].contiguous(), torch.tensor([0.32, 0.62, 0.85])),
        baldness=torch.where(u[:, 20] < 0.45, 0.6 + 0.4 * u[:, 21], 0.3 * u[:, 21]),
        grey_rate=0.7 + 0.7 * u[:, 22],
        base_age=u[:, 23],
    )


class SynthSource(DataSource):
    """What synthfaces and synthchairs share: splits, the factor table, loading, the cache.

    Subclasses set ``name``, ``parts``, ``default_ids`` and implement ``_split_size``,
    ``_split_factors``, ``_labels_of`` and ``_draw`` (factors → :class:`RenderOutput`).
    """

    name: ClassVar[str] = "synth"
    parts: ClassVar[tuple[str, ...]] = ()
    #: cache format version: bump when the images of the same factors change.
    version: ClassVar[int] = 1

    def _cache_fields(self) -> dict[str, Any]:
        """The config values that name this source's cache files: what decides its images."""
        fields = {k: v for k, v in self.config.model_dump().items() if k not in ("cache", "attribute", "device", "aa")}
        if fields.get("poses") == "all":  # the default: caches written before the key existed stay valid
            del fields["poses"]
        if fields.get("test_identities", 0) is None:  # likewise
            del fields["test_identities"]
        return fields

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        try:
            self.device = torch.device(c.device)
        except RuntimeError as e:
            raise DataError(f"{self.name}: device {c.device!r} is not a torch device ({e})") from None
        self.n_ids_train = c.identities or self._default_ids()
        self.n_ids_test = c.test_identities or max(2, self.n_ids_train // 5)
        splits = ("train", "test") if c.split == "all" else (c.split,)
        self._sizes = {s: self._split_size(s) for s in splits}
        self._n = sum(self._sizes.values())
        self._labels: dict[str, Tensor] | None = None
        self._cache: tuple[np.memmap, np.memmap] | None = None

    # -- what subclasses implement -------------------------------------------------------------
    def _default_ids(self) -> int:
        raise NotImplementedError

    def _split_size(self, split: str) -> int:
        raise NotImplementedError

    def _split_factors(self, split: str, idx: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _labels_of(self, f: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def _draw(self, f: dict[str, Tensor], masks: bool) -> RenderOutput:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _ids(self, split: str) -> tuple[int, int]:
        """(number of identities, first identity id) of ``split``; train and test ids are disjoint."""
        return (self.n_ids_train, 0) if split == "train" else (self.n_ids_test, self.n_ids_train)

    def _check(self, indices: Sequence[int] | Tensor) -> Tensor:
        try:
            idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"{self.name}: indices must be a sequence of ints, got {indices!r}") from None
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._n):
            bad = idx[(idx < 0) | (idx >= self._n)][0]
            raise DataError(f"{self.name}: index {int(bad)} is out of range for {self._n} samples")
        return idx

    def factors(self, indices: Sequence[int] | Tensor) -> dict[str, Tensor]:
        """The factors of samples ``indices`` (a dict of ``[B]`` tensors; cheap, no rendering)."""
        idx = self._check(indices)
        if self.config.split != "all":
            return self._split_factors(self.config.split, idx)
        n_train = self._sizes["train"]
        is_test = idx >= n_train
        parts = [self._split_factors("train", idx[~is_test]), self._split_factors("test", idx[is_test] - n_train)]
        out = {}
        for k in parts[0]:
            v = torch.empty((len(idx),), dtype=parts[0][k].dtype)
            v[~is_test], v[is_test] = parts[0][k], parts[1][k]
            out[k] = v
        return out

    def labels(self) -> dict[str, Tensor]:
        """Every factor and label of every sample (no rendering)."""
        if self._labels is None:
            self._labels = self._labels_of(self.factors(torch.arange(self._n)))
        return self.attribute_label(dict(self._labels))

    def load(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Images ``[B, 3, R, R]`` in [-1, 1] under ``"image"`` plus every label of these samples."""
        idx = self._check(indices)
        f = self.factors(idx)
        image = self._cached(idx, f) if self.config.cache else self.render(f)
        return {"image": image, **self.attribute_label(self._labels_of(f))}

    def render(self, factors: dict[str, Tensor], masks: bool = False) -> Any:
        """Draw samples with ``factors`` (e.g. ``factors(i)`` with one entry changed).

        :returns: images ``[B, 3, R, R]`` in [-1, 1] (CPU); with ``masks=True`` a pair
            ``(images, masks)`` where ``masks`` maps each name of ``parts`` to its pixel
            coverage ``[B, R, R]`` in [0, 1].
        """
        if not isinstance(factors, dict) or not factors:
            raise DataError(f"{self.name}.render: factors must be a non-empty dict of tensors, got {type(factors).__name__}")
        f = {k: torch.as_tensor(v).reshape(-1) for k, v in factors.items()}
        n = max(len(v) for v in f.values())
        # ~1 M subsamples at a time (64 images at 64 px, 2×2) keeps the working set small
        sub = self.config.resolution * self.config.supersample
        chunk = n if self.device.type != "cpu" else max(1, (1 << 20) // (sub * sub))
        images, covers = [], []
        for i in range(0, n, chunk):
            part = {k: (v if len(v) == 1 else v[i : i + chunk]) for k, v in f.items()}
            out = self._draw(part, masks)
            images.append((out.image * 2 - 1).cpu())
            if masks:
                assert out.coverage is not None
                covers.append(out.coverage.cpu())
        image = torch.cat(images)
        if not masks:
            return image
        cov = torch.cat(covers)
        return image, {name: cov[:, i] for i, name in enumerate(self.parts)}

    def _cached(self, idx: Tensor, f: dict[str, Tensor]) -> Tensor:
        """Images of ``idx`` from the memory-mapped cache, rendering (once) those not there yet."""
        data, done = self._open_cache()
        have = torch.from_numpy(np.asarray(done[idx.numpy()])).bool()
        if not bool(have.all()):
            sel = (~have).nonzero().flatten()
            todo = idx[sel].numpy()
            img = self.render({k: v[sel] for k, v in f.items()})
            data[todo] = ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            data.flush()
            done[todo] = 1
            done.flush()
        out = torch.from_numpy(data[idx.numpy()])
        return out.float() / 127.5 - 1

    def _open_cache(self) -> tuple[np.memmap, np.memmap]:
        if self._cache is None:
            c = self.config
            root = Path(c.cache)  # type: ignore[arg-type]
            root.mkdir(parents=True, exist_ok=True)
            fields = self._cache_fields()
            # the compiled renderer agrees with the eager one to ~1e-6, not bit for bit: a cache
            # filled by one backend is never mixed with the other's images
            compiled = self.device.type == "cpu" and render_backend() == "compiled"
            tag = f"{self.name}-v{self.version}-{_key(sorted(fields.items())):08x}-{self._n}x{c.resolution}"
            tag += "-compiled" if compiled else ""
            # adaptive anti-aliasing draws other pixels than full: never the same files
            tag += "-aa_adaptive" if getattr(c, "aa", "full") == "adaptive" and c.supersample > 1 else ""
            shape = (self._n, 3, c.resolution, c.resolution)
            data_path, done_path = root / f"{tag}.u8", root / f"{tag}.done"
            for path, size in ((data_path, int(np.prod(shape))), (done_path, self._n)):
                if not path.exists() or path.stat().st_size != size:
                    with open(path, "wb") as fh:
                        fh.truncate(size)
            self._cache = (
                np.memmap(data_path, dtype=np.uint8, mode="r+", shape=shape),
                np.memmap(done_path, dtype=np.uint8, mode="r+", shape=(self._n,)),
            )
        return self._cache


class SynthFaces(SynthSource):
    """Procedural 3D faces with ground-truth factors, rendered in batch (see module docstring).

    ``load(indices)`` renders (or reads from the optional on-disk cache) and returns
    ``{"image": [B, 3, R, R] in [-1, 1], **labels}``; ``factors(indices)`` gives the factors
    and ``render(factors, masks=False)`` draws any factors — change one to get the true
    counterfactual.  Masks: one per name of :data:`PARTS`.
    """

    class Config(DataConfig):
        profile: Literal["celeba", "utkface", "multipie", "free"] = Field(
            "celeba", description="which dataset the samples imitate (see the module docstring)"
        )
        seed: int = Field(0, ge=0, description="dataset seed: same seed, same images")
        size: int | None = Field(None, ge=1, description="samples in the split; None: 20000 train / 2000 test")
        identities: int | None = Field(
            None, ge=1, description="identities in the train split (test: a fifth, at least 2); None: profile default"
        )
        test_identities: int | None = Field(
            None, ge=2, description="identities in the test split, none of them in the train split; None: a fifth of identities"
        )
        cache: str | None = Field(None, description="directory for a memory-mapped uint8 cache of rendered images")
        supersample: int = Field(2, ge=1, le=4, description="anti-aliasing subsamples per pixel side")
        backdrop: Literal["studio", "random"] | None = Field(
            None, description="'studio': one backdrop colour for all images; 'random': drawn per image; "
            "None: the profile's (multipie: studio, the others: random)"
        )
        aa: Literal["full", "adaptive"] = Field(
            "full", description="anti-aliasing: every pixel supersampled, or only pixels with edges / fine texture"
        )
        device: str = Field("cpu", description="torch device that renders (images are returned on the CPU)")
        poses: Literal["all", "drgan9"] | list[int] = Field(
            "all",
            description="profile 'multipie': the poses of the grid: 'all' 13 (-90..90 degrees, 15 apart), 'drgan9' "
            "the 9 within +-60 (DR-GAN's CVPR protocol), or a list of yaws in degrees; label 'pose' indexes them",
        )

        @field_validator("poses")
        @classmethod
        def _check_poses(cls, v: Any) -> Any:
            if isinstance(v, list):
                bad = [y for y in v if y % 15 or not -90 <= y <= 90]
                if bad or not v or len(set(v)) != len(v):
                    raise ValueError(f"poses must be distinct yaws among -90, -75, ..., 90 degrees, got {v}")
            return v

        @model_validator(mode="after")
        def _poses_need_multipie(self) -> Any:
            if self.poses != "all" and self.profile != "multipie":
                raise ValueError(f"poses applies to profile 'multipie' only (profile is {self.profile!r})")
            return self

    provides: ClassVar[tuple[str, ...]] = (
        "identity", "age", "age_group", "gender", "smile", "mouth_open", "eyeglasses", "sunglasses", "beard",
        "moustache", "hair_color", "yaw", "pitch", "pose", "light", "expression", "Eyeglasses", "Smiling",
        "Mouth_Slightly_Open", "Male", "No_Beard", "Mustache", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair",
        "Gray_Hair", "Young", "Bald",
    )
    name: ClassVar[str] = "synthfaces"
    parts: ClassVar[tuple[str, ...]] = PARTS

    def _cache_fields(self) -> dict[str, Any]:
        # the backdrop the images have, not the option as written: a per-image one (every
        # profile's until multipie got its studio) names no field, so those caches stay valid;
        # a studio one is always named, so multipie's old images are never read as new ones
        fields = super()._cache_fields()
        del fields["backdrop"]
        if self.backdrop() == "studio":
            fields["backdrop"] = "studio"
        return fields

    def _default_ids(self) -> int:
        return _DEFAULT_IDS[self.config.profile]

    def _split_size(self, split: str) -> int:
        c = self.config
        if c.size is not None and c.split == split:
            return c.size
        if c.size is not None and c.split == "all":
            return c.size if split == "train" else max(1, c.size // 10)
        return _DEFAULT_SIZE[split]

    def kept_poses(self) -> tuple[int, ...]:
        """The grid's poses as indices 0..12 of the 13 yaws (−90° + 15° · index), in yaw order."""
        p = self.config.poses
        if p == "all":
            return tuple(range(N_POSES))
        if p == "drgan9":
            return tuple(range(2, 11))
        return tuple(sorted((y + 90) // 15 for y in p))

    def _grid_total(self, split: str) -> int:
        return self._ids(split)[0] * len(self.kept_poses()) * N_LIGHTS * N_EXPRESSIONS

    def _labels_of(self, f: dict[str, Tensor]) -> dict[str, Tensor]:
        labels = face_labels(f)
        kept = self.kept_poses()
        if len(kept) < N_POSES:  # pose indexes the kept poses; any other yaw (a counterfactual) is missing
            table = torch.full((N_POSES,), -1, dtype=torch.long)
            table[list(kept)] = torch.arange(len(kept))
            labels["pose"] = table[labels["pose"]]
        return labels

    def _draw(self, f: dict[str, Tensor], masks: bool) -> RenderOutput:
        return render_faces(_complete(f), self.config.resolution, self.config.supersample, self.device, masks,
                            self.config.aa)

    def _split_factors(self, split: str, idx: Tensor) -> dict[str, Tensor]:
        c = self.config
        prof = c.profile
        n_ids, id_offset = self._ids(split)
        u = uniform(_key("synthfaces", c.seed, prof, split, "sample"), idx, 32)
        n = len(idx)
        if prof == "multipie":
            total = self._grid_total(split)
            stride = _coprime_stride(total)
            g = (idx * stride + _key(c.seed, split) % total) % total
            kept = torch.tensor(self.kept_poses())
            pose, g = kept[g % len(kept)], g // len(kept)
            light, g = g % N_LIGHTS, g // N_LIGHTS
            expr, local_id = g % N_EXPRESSIONS, g // N_EXPRESSIONS
        else:
            local_id = idx % n_ids
        ids = local_id + id_offset
        f = _identity_factors(c.seed, ids)
        f["identity"] = ids
        fem = f["gender"].bool()
        male = ~fem
        ui = uniform(_key("synthfaces", c.seed, "identity-sample"), ids, 8)  # identity habits

        def bern(col: int, p: float | Tensor) -> Tensor:
            return (u[:, col] < p).long()

        if prof == "celeba":
            age = 18 + 52 * f["base_age"] ** 1.4 + (u[:, 0] - 0.5) * 4
            glasses = torch.bucketize(u[:, 1].contiguous(), torch.tensor([0.55, 0.82]))
            smile, mouth = bern(2, 0.5), bern(3, 0.45)
            beard = bern(4, 0.6) * male
            moustache = bern(5, 0.5) * male
            bangs = bern(6, 0.4)
            yaw = (u[:, 7] - 0.5) * 20
            pitch = (u[:, 8] - 0.5) * 10
            roll = (u[:, 9] - 0.5) * 4
            light = 6 + (u[:, 10] * 8).long()
        elif prof == "utkface":
            age = 85 * u[:, 0]
            glasses = torch.bucketize(u[:, 1].contiguous(), torch.tensor([0.85, 0.95]))
            smile, mouth = bern(2, 0.45), bern(3, 0.25)
            adult_m = male & (age > 17)
            beard = bern(4, 0.4) * adult_m
            moustache = bern(5, 0.35) * adult_m
            bangs = bern(6, 0.3)
            yaw = (u[:, 7] - 0.5) * 24
            pitch = (u[:, 8] - 0.5) * 12
            roll = (u[:, 9] - 0.5) * 6
            light = 4 + (u[:, 10] * 12).long()
        elif prof == "multipie":
            age = 20 + 45 * f["base_age"]
            glasses = (ui[:, 0] < 0.25).long()  # people keep their glasses on across sessions
            smile, mouth = expr % 2, expr // 2
            beard = (ui[:, 1] < 0.4).long() * male
            moustache = (ui[:, 2] < 0.4).long() * male
            bangs = (ui[:, 3] < 0.3).long()
            yaw = (pose.float() * 15 - 90)
            pitch = torch.zeros(n)
            roll = torch.zeros(n)
        else:  # free
            age = 85 * u[:, 0]
            glasses = torch.bucketize(u[:, 1].contiguous(), torch.tensor([0.6, 0.85]))
            smile, mouth = bern(2, 0.4), bern(3, 0.3)
            beard = bern(4, 0.5) * male
            moustache = bern(5, 0.4) * male
            bangs = bern(6, 0.35)
            yaw = (u[:, 7] - 0.5) * 180
            pitch = (u[:, 8] - 0.5) * 40
            roll = (u[:, 9] - 0.5) * 16
            light = (u[:, 10] * N_LIGHTS).long()
        f.update(
            age=age.float(),
            glasses=glasses.long(),
            frame=(u[:, 11] * len(FRAMES)).long().clamp(max=len(FRAMES) - 1),
            tint=(u[:, 12] * len(LENS_TINTS)).long().clamp(max=len(LENS_TINTS) - 1),
            smile=smile.long(),
            mouth_open=mouth.long(),
            beard=beard.long(),
            moustache=moustache.long(),
            bangs=bangs.long(),
            yaw=yaw.float(),
            pitch=pitch.float(),
            roll=roll.float(),
            light=light.long().clamp(max=N_LIGHTS - 1),
            background=(u[:, 13] * len(BACKGROUNDS)).long().clamp(max=len(BACKGROUNDS) - 1),
            clothes=(u[:, 14] * len(CLOTHES)).long().clamp(max=len(CLOTHES) - 1),
        )
        if self.backdrop() == "studio":
            f["background"] = torch.zeros(n, dtype=torch.long)
        return f

    def backdrop(self) -> str:
        """'studio' (one backdrop colour for every image) or 'random' (one drawn per image)."""
        return self.config.backdrop or ("studio" if self.config.profile == "multipie" else "random")


def _coprime_stride(total: int) -> int:
    """A stride coprime with ``total`` so ``i * stride mod total`` visits the whole grid."""
    for s in (7919, 7907, 7901, 7883, 104729):
        if math.gcd(s, total) == 1:
            return s
    return 1


def _complete(factors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Check a factor dict for :func:`render_faces` and make every entry a ``[B]`` tensor."""
    need = set(IDENTITY_FACTORS) | set(SAMPLE_FACTORS)
    missing = sorted(need - set(factors))
    if missing:
        raise DataError(f"synthfaces.render: factors lack {', '.join(missing)} (take them from .factors(indices))")
    sizes = {k: torch.as_tensor(v).reshape(-1).shape[0] for k, v in factors.items() if k in need}
    b = max(sizes.values())
    bad = {k: s for k, s in sizes.items() if s not in (1, b)}
    if bad:
        raise DataError(f"synthfaces.render: factors must all have {b} entries (or 1); got {bad}")
    return {k: torch.as_tensor(factors[k]).reshape(-1).expand(b) for k in need}


# -- geometry ------------------------------------------------------------------------------------
def _front_z(x: Tensor, y: Tensor, c: Tensor, s: Tensor) -> Tensor:
    """z of the front surface of ellipsoid (center ``c``, half-axes ``s``, ``[B, 3]``) at (x, y)."""
    q = 1 - ((x - c[:, 0]) / s[:, 0]) ** 2 - ((y - c[:, 1]) / s[:, 1]) ** 2
    return torch.where(q > 0, c[:, 2] + s[:, 2] * q.clamp_min(0).sqrt(), torch.full_like(q, -9.0))


def _v(*cols: Tensor | float, b: int, dev: torch.device) -> Tensor:
    return torch.stack([torch.as_tensor(c, dtype=torch.float32, device=dev).expand(b) for c in cols], -1)


def _paint_skin_eager(bi: Tensor, point: Tensor, sub: Tensor, r_head: Tensor, pos: Tensor, old: Tensor, kid: Tensor,
                      ey: Tensor, ex: Tensor, my: Tensor) -> Tensor:
    """Wrinkles, folds, eye bags (``old``) and blush (``kid``) on skin albedo ``sub`` at hits ``point``
    of images ``bi``, painted in the head's own frame (per-image tables ``[B, ...]``)."""
    rh = r_head[bi]
    v = point - pos[bi]
    # head frame: r_headᵀ (p - pos), the column sums written out
    q = rh[:, 0] * v[:, 0:1] + rh[:, 1] * v[:, 1:2] + rh[:, 2] * v[:, 2:3]
    x, y, z = q.unbind(-1)
    o, kk = old[bi], kid[bi]
    ax = x.abs()
    eyb, exb, myb = ey[bi], ex[bi], my[bi]
    front = (z > 0.35).float()
    # forehead lines
    fy = (y - eyb - 0.32) / 0.09
    lines = (0.5 + 0.5 * torch.cos(2 * math.pi * fy)) ** 8 * ((fy > -0.5) & (fy < 3.5) & (ax < 0.42)).float()
    # nasolabial folds: from the nose wings down to past the mouth corners
    t = ((eyb - 0.3 - y) / 0.32).clamp(0, 1)
    fold_x = 0.12 + 0.12 * t
    fold = torch.exp(-(((ax - fold_x) / 0.022) ** 2)) * ((y < eyb - 0.28) & (y > myb - 0.1)).float()
    # marionette lines below the mouth corners
    mar = torch.exp(-(((ax - 0.2) / 0.02) ** 2)) * ((y < myb - 0.03) & (y > myb - 0.25)).float()
    # eye bags and crow's feet
    bag = torch.exp(-(((ax - exb) / 0.1) ** 2) - ((y - eyb + 0.14) / 0.035) ** 2)
    crow = (0.5 + 0.5 * torch.cos(2 * math.pi * (y - eyb) / 0.06)) ** 6 * torch.exp(-(((ax - exb - 0.17) / 0.04) ** 2))
    crow = crow * ((y - eyb).abs() < 0.1).float()
    dark = o * front * (0.35 * lines + 0.45 * fold + 0.35 * mar + 0.35 * bag + 0.3 * crow)
    shade = (1 - dark.clamp(0, 0.7))[:, None]
    # rosy cheeks for children
    blush = kk * torch.exp(-(((ax - 0.36) / 0.13) ** 2) - ((y + 0.22) / 0.1) ** 2) * front
    return sub * shade * (1 - 0.18 * blush[:, None] * torch.tensor([0.0, 1.0, 1.0], device=sub.device))


#: compiled with the renderer's backend (see gancore_synth.render.render_backend)
_paint_skin = compiled_stage("synthfaces.paint_skin", _paint_skin_eager)

HEAD_POS = (0.0, 0.18, 0.0)
CAMERA = Camera(distance=10.0, fov=16.5)


def render_faces(f: dict[str, Tensor], resolution: int, supersample: int, device: torch.device, masks: bool,
                 aa: str = "full"):
    """Build the primitives of faces ``f`` and ray-cast them (images in [0, 1])."""
    dev = device
    f = {k: v.to(dev) for k, v in f.items()}
    b = f["age"].shape[0]
    fl = {k: v.float() for k, v in f.items()}
    age = fl["age"]
    fem = fl["gender"]
    kid = ((18 - age) / 18).clamp(0, 1)
    old = ((age - 35) / 45).clamp(0, 1)
    grey = _grey(age, fl["grey_rate"])
    recede = _recede(age, f["gender"], fl["baldness"])
    smile, open_ = fl["smile"], fl["mouth_open"]

    skin = SKIN_TONES.to(dev)[f["skin"]] * (1 + fl["skin_shade"])[:, None]
    skin = skin * (1 - 0.08 * old)[:, None] + 0.04 * old[:, None]
    hair_base = HAIR_COLORS.to(dev)[f["hair_color"]]
    hair = torch.lerp(hair_base, GREY.to(dev).expand(b, 3), grey[:, None])
    brow_col = torch.lerp(hair_base * 0.8, GREY.to(dev).expand(b, 3) * 0.85, (grey * 0.7)[:, None])
    brow_col = torch.minimum(brow_col, skin * 0.55)

    def V(*cols: Tensor | float) -> Tensor:
        return _v(*cols, b=b, dev=dev)

    # skull and jaw
    fw, fln = fl["face_width"], fl["face_length"]
    cran_c = V(0.0, 0.12 + 0.05 * kid, -0.08)
    cran_s = V(0.80 * fw * (1 + 0.04 * kid), 1.0 * fln * (1 + 0.04 * kid), 0.92)
    jw = fl["jaw_width"] * (1 - 0.1 * kid) * (1 + 0.04 * old)
    jl = (1 - 0.3 * kid) * fln
    jaw_c = V(0.0, -0.40 + 0.1 * kid, 0.02)
    jaw_s = V(0.64 * jw, 0.66 * jl, 0.76)
    cheek_s = V(0.27 + 0.04 * kid, 0.25, 0.34)

    def surf(x: Tensor | float, y: Tensor | float) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=dev).expand(b)
        y = torch.as_tensor(y, dtype=torch.float32, device=dev).expand(b)
        return torch.maximum(_front_z(x, y, cran_c, cran_s), _front_z(x, y, jaw_c, jaw_s))

    sb = SceneBuilder(b, dev)
    E, C, X = ELLIPSOID, CYLINDER, BOX
    sb.add("cranium", E, SKIN, cran_c, cran_s, skin)
    sb.add("jaw", E, SKIN, jaw_c, jaw_s, skin)
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"cheek_{nm}", E, SKIN, V(sgn * 0.33 * fw, -0.2 + 0.04 * kid, 0.3 + 0.04 * kid), cheek_s, skin)
    chin_y = jaw_c[:, 1] - jaw_s[:, 1] * 0.8
    sb.add("chin", E, SKIN, V(0.0, chin_y, surf(0.0, chin_y) - 0.16), V(0.2, 0.15, 0.2) * fl["chin"][:, None], skin)

    # eyes
    ey = 0.03 - 0.12 * kid
    ex = 0.29 * fl["eye_spacing"] * fw
    er = 0.105 * fl["eye_size"] * (1 + 0.3 * kid)
    eye_col = EYE_COLORS.to(dev)[f["eye_color"]]
    white = torch.tensor([0.95, 0.94, 0.92], device=dev)
    black = torch.tensor([0.02, 0.02, 0.02], device=dev)
    eye_z = surf(ex, ey) - 0.5 * er
    lid_col = skin * 0.9
    for sgn, nm in ((1, "r"), (-1, "l")):
        c = V(sgn * ex, ey, eye_z)
        sb.add(f"eye_{nm}", E, EYES, c, V(er, er, er), white, zones=(eye_col, 0.62, black, 0.3), shine=0.6)
        lid_s = (er * 1.1)[:, None].expand(b, 3)
        sb.add(f"lid_{nm}", E, SKIN, c, lid_s, lid_col, clip=V(0.0, -1.0, 0.0, -(0.42 - 0.1 * kid)))
        sb.add(f"lowlid_{nm}", E, SKIN, c, lid_s * 0.98, skin, clip=V(0.0, 1.0, 0.0, -0.62))
        by = ey + 0.19 + 0.02 * kid
        sb.add(
            f"brow_{nm}", E, EYES,
            V(sgn * ex * 1.02, by, surf(ex, by) - 0.02),
            V(0.15, 0.03 * fl["brow_thick"] * (1 - 0.4 * kid), 0.05),
            brow_col, rot=rotation(torch.zeros(b), torch.zeros(b), -sgn * fl["brow_tilt"]),
        )

    # nose: bridge, tip, wings — protrudes, so profiles show a nose silhouette
    nl = fl["nose_length"] * (1 - 0.35 * kid) * (1 + 0.06 * old)
    nw = fl["nose_width"] * (1 - 0.2 * kid)
    proj = (1 - 0.45 * kid) * fl["nose_tip"]
    bridge_y = ey - 0.12 * nl
    sb.add("nose_bridge", E, SKIN, V(0.0, bridge_y, surf(0.0, bridge_y) - 0.02 + 0.03 * proj),
           V(0.06 * nw, 0.21 * nl, 0.08), skin, rot=rotation(torch.zeros(b), torch.full((b,), 18.0)))
    tip_y = ey - 0.31 * nl
    sb.add("nose_tip", E, SKIN, V(0.0, tip_y, surf(0.0, tip_y) + 0.06 + 0.05 * proj), V(0.075 * nw, 0.07, 0.075), skin)
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"nostril_{nm}", E, SKIN, V(sgn * 0.07 * nw, tip_y - 0.02, surf(0.07, tip_y) + 0.02),
               V(0.05 * nw, 0.045, 0.05), skin * 0.95)

    # mouth: lips (corners turn up with a smile), teeth, dark cavity when open
    my = ey - 0.55 * (1 - 0.22 * kid)
    mz = surf(0.0, my)
    mw = (1.1 + 0.2 * smile) * (1 - 0.15 * kid)
    lf = fl["lip_full"] * (1 - 0.25 * old)
    lip = torch.lerp(skin * torch.tensor([0.85, 0.55, 0.55], device=dev), torch.tensor([0.75, 0.2, 0.25], device=dev),
                     (0.35 * fem + 0.1)[:, None])
    zeros = torch.zeros(b, device=dev)
    for sgn, nm in ((1, "r"), (-1, "l")):
        rot_u = rotation(zeros, zeros, sgn * (5 + 24 * smile))
        sb.add(f"lip_up_{nm}", E, MOUTH, V(sgn * 0.085 * mw, my + 0.028 + 0.02 * smile + 0.02 * open_, mz + 0.02),
               V(0.1 * mw, 0.03 * lf, 0.05), lip, rot=rot_u, shine=0.15)
        sb.add(f"lip_lo_{nm}", E, MOUTH, V(sgn * 0.08 * mw, my - 0.032 - 0.025 * smile - 0.1 * open_, mz + 0.015),
               V(0.095 * mw, 0.038 * lf, 0.05), lip, rot=rotation(zeros, zeros, sgn * (4 + 16 * smile)), shine=0.15)
    sb.add("teeth", E, MOUTH, V(0.0, my + 0.005 + 0.01 * smile, mz - 0.015), V(0.14 * mw, 0.036 + 0.012 * smile, 0.045),
           torch.tensor([0.96, 0.95, 0.9], device=dev))
    sb.add("cavity", E, MOUTH, V(0.0, my - 0.03 - 0.04 * open_, mz - 0.04), V(0.12 * mw, 0.04 + 0.075 * open_, 0.05),
           torch.tensor([0.22, 0.05, 0.06], device=dev))

    # ears
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"ear_{nm}", E, SKIN, V(sgn * (0.78 * fw), ey - 0.08, -0.1),
               V(0.06, 0.19 * fl["ear_size"] * (1 + 0.1 * kid), 0.12), skin * 0.97,
               rot=rotation(torch.full((b,), sgn * 20.0)))

    # hair: cap with a hairline plane (recedes with age), long hair behind, bangs
    vol = fl["hair_volume"] * (age / 4).clamp(0.3, 1)
    length = fl["hair_length"] * (age / 8).clamp(0, 1) * (1 - recede)
    alpha = torch.deg2rad(55 * (1 - recede))
    y0 = 0.5 - 0.1 * kid
    h0 = math.sqrt(1 - 0.5**2)
    h = torch.lerp(torch.cos(alpha) * h0 - torch.sin(alpha) * y0, torch.full_like(alpha, -0.35), recede)
    h = torch.where(recede > 0, h, math.cos(math.radians(55)) * h0 - math.sin(math.radians(55)) * y0 + 0 * h)
    sb.add("hair_cap", E, HAIR, cran_c + V(0.0, 0.02, -0.02), cran_s + V(vol, 0.9 * vol, vol), hair,
           clip=torch.stack([zeros, -torch.sin(alpha), torch.cos(alpha), h], -1), shine=0.08)
    sb.add("hair_long", E, HAIR, V(0.0, 0.05 - 0.6 * length, -0.32), V(0.78 * fw + vol + 0.04, 0.72 + 0.75 * length, 0.6),
           hair, clip=V(0.0, 0.0, 1.0, 0.45), visible=length > 0.05)
    bang_y = 0.56 + 0.02 * kid
    sb.add("bangs", E, HAIR, V(0.0, bang_y, surf(0.0, bang_y) - 0.14), V(0.62 * fw + vol, 0.26, 0.24), hair,
           visible=f["bangs"] > 0.5, shine=0.08)

    # facial hair
    sb.add("beard", E, BEARD, jaw_c + V(0.0, -0.02, 0.0), jaw_s + V(0.035, 0.04, 0.03), hair * 0.85,
           clip=V(0.0, 1.0, 0.0, -0.08), visible=f["beard"] > 0.5)
    mo_y = my + 0.085
    sb.add("moustache", E, BEARD, V(0.0, mo_y, surf(0.0, mo_y) + 0.015), V(0.17, 0.04, 0.06), hair * 0.85,
           visible=f["moustache"] > 0.5)

    # glasses: tinted transparent lenses with dark rims, bridge, temples
    sun = (f["glasses"] == 2).float()
    has = f["glasses"] > 0
    frame = FRAMES.to(dev)[f["frame"]]
    frame = torch.lerp(frame, black.expand(b, 3), sun[:, None])
    tint = torch.lerp(LENS_TINTS.to(dev)[f["tint"]], torch.tensor([0.04, 0.04, 0.05], device=dev).expand(b, 3), sun[:, None])
    lens_z = torch.maximum(eye_z + er + 0.09, surf(0.0, ey) + 0.12)
    lx, ly = ex, ey + 0.01
    lw, lh = 0.2 + 0.02 * sun, 0.145 + 0.02 * sun
    for sgn, nm in ((1, "r"), (-1, "l")):
        sb.add(f"lens_{nm}", C, GLASSES, V(sgn * lx, ly, lens_z), V(lw, lh, 0.012), frame,
               zones=(tint, 0.7, tint, 0.0), alpha=V(1.0, 0.5 + 0.45 * sun, 1.0), visible=has, shine=0.5)
        # temple arm from the outer rim back to the ear
        p0 = torch.stack([sgn * (lx + lw), ly + 0.04, lens_z], -1)
        p1 = torch.stack([sgn * 0.8 * fw, ly + 0.02, torch.full_like(lx, -0.12)], -1)
        mid, dvec = (p0 + p1) / 2, p1 - p0
        yaw_t = torch.rad2deg(torch.atan2(dvec[:, 0], dvec[:, 2]))
        sb.add(f"temple_{nm}", X, GLASSES, mid, torch.stack([torch.full_like(lx, 0.02), torch.full_like(lx, 0.022),
               dvec.norm(dim=-1) / 2], -1), frame, rot=rotation(yaw_t), visible=has)
    sb.add("bridge", X, GLASSES, V(0.0, ly + 0.06, lens_z), torch.stack([lx - lw + 0.02, torch.full_like(lx, 0.02),
           torch.full_like(lx, 0.015)], -1), frame, visible=has)

    head_count = len(sb.names)
    # body (turns with yaw only)
    sb.add("neck", C, SKIN, V(0.0, -1.1, -0.2), V(0.36 * (1 - 0.15 * kid), 0.36 * (1 - 0.15 * kid), 0.6), skin * 0.93,
           rot=rotation(zeros, torch.full((b,), 90.0)))
    sb.add("torso", E, BODY, V(0.0, -2.25, -0.3), V(1.45 * (1 - 0.2 * kid), 0.95, 0.72), CLOTHES.to(dev)[f["clothes"]])

    prims = sb.build()
    head = torch.zeros(prims.count, dtype=torch.bool, device=dev)
    head[:head_count] = True
    pos = torch.tensor(HEAD_POS, device=dev).expand(b, 3)
    r_head = rotation(fl["yaw"], fl["pitch"], fl["roll"])
    prims = prims.transformed(r_head, pos, head)
    prims = prims.transformed(rotation(fl["yaw"]), pos, ~head)

    # wrinkles, folds and eye bags painted in the head's own frame
    # only skin of images with some age (old > 0) or youth (kid > 0) changes: elsewhere every
    # term below is exactly zero and the albedo comes back unchanged, so it is not computed
    aged = (old > 0) | (kid > 0)

    def albedo_fn(albedo: Tensor, part: Tensor, point: Tensor, normal: Tensor, bi: Tensor) -> Tensor:
        sel = ((part == SKIN) & aged.index_select(0, bi)).nonzero().flatten()
        if sel.numel() == 0:
            return albedo
        tinted = _paint_skin(bi.index_select(0, sel), point.index_select(0, sel), albedo.index_select(0, sel),
                             r_head, pos, old, kid, ey, ex, my)
        return albedo.index_copy(0, sel, tinted)

    # where the painting is finer than a pixel (lines ~2 px apart, folds ~1 px wide at 64 px):
    # the bands of _paint_skin_eager's terms, widened by a margin, on skin of images whose
    # wrinkles are dark enough to alias visibly (aa="adaptive" supersamples those pixels)
    wrinkled = old * 0.45 > 1 / 255

    def fine_texture(point: Tensor, part: Tensor, bi: Tensor) -> Tensor:
        m = 0.03  # margin, head units (a pixel is ~0.045 at 64 px)
        q = torch.einsum("mji,mj->mi", r_head.index_select(0, bi), point - pos.index_select(0, bi))
        x, y, z = q.unbind(-1)
        ax = x.abs()
        eyb, exb, myb = ey.index_select(0, bi), ex.index_select(0, bi), my.index_select(0, bi)
        lines = (y > eyb + 0.32 - 0.045 - m) & (y < eyb + 0.32 + 0.315 + m) & (ax < 0.42 + m)
        # nasolabial folds (|x| 0.12..0.24 ± 0.05) and marionette lines (|x| 0.2 ± 0.05)
        folds = (y < eyb - 0.28 + m) & (y > myb - 0.25 - m) & (ax > 0.07 - m) & (ax < 0.29 + m)
        # eye bags (y ≈ eyb - 0.14, 0.035 high) and crow's feet (|y - eyb| < 0.1, beside the eye)
        eyes = (y > eyb - 0.22 - m) & (y < eyb + 0.1 + m) & (ax > exb - 0.22 - m) & (ax < exb + 0.27 + m)
        return (part == SKIN) & wrinkled.index_select(0, bi) & (z > 0.3) & (lines | folds | eyes)

    light = Light(LIGHT_DIRS.to(dev)[f["light"]], LIGHT_AMBIENT.to(dev)[f["light"]])
    bg = BACKGROUNDS.to(dev)[f["background"]]
    return render(
        prims, light, bg, resolution=resolution, supersample=supersample, camera=CAMERA, albedo_fn=albedo_fn,
        n_parts=len(PARTS) if masks else None, **(dict(aa=aa, fine_texture=fine_texture) if aa != "full" else {}),
    )

