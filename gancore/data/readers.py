"""Readers for real face (and chair) datasets on the user's disk; nothing is downloaded.

Each reader is a :class:`~gancore.data.base.DataSource`: it parses the dataset's label
files (or file names) once when built, without opening any image, and loads images on
demand through :class:`~gancore.data.images.ImageFolderLoader`, which converts odd
images and replaces unreadable ones by the next readable sample (counted in
``source.loader.report``).  Names or lines a reader cannot use are skipped and counted in
``source.scan_report``; a missing root or label file is a :class:`DataError` that shows
the layout expected.  ``docs/datasets.md`` describes every format.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import numpy as np
import torch
from pydantic import Field, field_validator

from .base import DataConfig, DataError, DataSource
from .images import ImageFolderLoader

__all__ = [
    "CelebA",
    "UTKFace",
    "MultiPIE",
    "CFP",
    "CFPProtocol",
    "Chairs3D",
    "Folder",
    "ScanReport",
    "CELEBA_ATTRIBUTES",
    "MULTIPIE_CAMERAS",
    "MULTIPIE_EXPRESSIONS",
    "age_group",
]

log = logging.getLogger("gancore.data")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: the 40 attributes of ``list_attr_celeba.txt``, in file order.
CELEBA_ATTRIBUTES = tuple(
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young".split()
)

#: Multi-PIE's 13 head-height cameras from one profile to the other; yaw = -90° + 15° · index.
MULTIPIE_CAMERAS = (
    "24_0", "01_0", "20_0", "19_0", "04_1", "05_0", "05_1", "14_0", "13_0", "08_0", "09_0", "12_0", "11_0",
)  # fmt: skip
#: the 9 cameras within ±60° (DR-GAN's CVPR protocol).
MULTIPIE_DRGAN9 = MULTIPIE_CAMERAS[2:11]
#: expression names, indexed by the ``expression`` label.
MULTIPIE_EXPRESSIONS = ("neutral", "smile", "surprise", "squint", "disgust", "scream")
#: (session, recording) → expression, from the Multi-PIE capture protocol.
MULTIPIE_RECORDINGS = {
    (1, 1): 0, (1, 2): 1,
    (2, 1): 0, (2, 2): 2, (2, 3): 3,
    (3, 1): 0, (3, 2): 1, (3, 3): 4,
    (4, 1): 0, (4, 2): 0, (4, 3): 5,
}  # fmt: skip

#: CAAE's 10 age groups: upper bound (inclusive) of each group but the last (71+).
AGE_GROUP_BOUNDS = (5, 10, 15, 20, 30, 40, 50, 60, 70)


def age_group(age: float) -> int:
    """CAAE age group 0..9 of an age in years: 0–5, 6–10, 11–15, 16–20, 21–30, …, 61–70, 71+."""
    for g, upper in enumerate(AGE_GROUP_BOUNDS):
        if age <= upper:
            return g
    return len(AGE_GROUP_BOUNDS)


def hash_fraction(name: str) -> float:
    """A number in [0, 1) fixed by ``name`` alone: the split of a file never depends on the others."""
    return zlib.crc32(name.encode()) / 2**32


@dataclass
class ScanReport:
    """What a reader skipped (with reasons) or noted while reading names and label files."""

    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, what: object) -> None:
        self.skipped[reason] += 1
        self._example(reason, what)

    def note(self, what_kind: str, what: object) -> None:
        self.notes[what_kind] += 1
        self._example(what_kind, what)

    def _example(self, key: str, what: object) -> None:
        ex = self.examples.setdefault(key, [])
        if len(ex) < 5:
            ex.append(str(what))

    def summary(self) -> str:
        lines = []
        for title, counts in (("skipped", self.skipped), ("noted", self.notes)):
            for key, n in sorted(counts.items()):
                lines.append(f"{title} {n} × {key} (e.g. {', '.join(self.examples[key])})")
        return "\n".join(lines) or "nothing skipped"


# -- configuration shared by the readers ------------------------------------------------


class FileConfig(DataConfig):
    """Keys of every reader of files on disk."""

    root: Path = Field(..., description="folder that holds the dataset (see docs/datasets.md)")
    crop: Union[Literal["center", "stretch"], tuple[float, float, float, float]] = Field(
        "center", description="'center' square, 'stretch', or a [left, top, right, bottom] box in pixels"
    )
    background: tuple[int, int, int] = Field((128, 128, 128), description="RGB under transparent pixels")
    workers: int = Field(4, ge=1, le=64, description="threads decoding the images of a batch")

    @field_validator("crop")
    @classmethod
    def _check_box(cls, v: Any) -> Any:
        if isinstance(v, tuple) and not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError(f"crop box {list(v)} needs left < right and top < bottom")
        return v

    @field_validator("background")
    @classmethod
    def _check_background(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= c <= 255 for c in v):
            raise ValueError("background values must be in 0..255")
        return v


class _FileSource(DataSource):
    """Shared machinery: root check, label table, batch loading with bad-file replacement."""

    Config: ClassVar[type[FileConfig]] = FileConfig
    #: the dataset's name in messages.
    title: ClassVar[str] = "dataset"
    #: the expected layout, shown when something is missing.
    layout: ClassVar[str] = ""
    #: crop boxes are given in pixels of an image of this size (scaled to the actual size).
    reference: ClassVar[tuple[int, int] | None] = None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.root = Path(self.config.root).expanduser()
        if not self.root.is_dir():
            raise self.missing(self.root, "data root folder")
        self.scan_report = ScanReport()
        self.files: list[str] = []
        self._paths: list[Path] | None = None
        self._table: dict[str, torch.Tensor] = {}
        self.scan()
        if not self.files:
            detail = self.scan_report.summary()
            raise DataError(
                f"{self.title}: no usable sample in split {self.config.split!r} under {self.root}\n"
                f"{detail}\nexpected layout:\n{self.layout}"
            )
        if self.scan_report.skipped:
            log.warning("%s under %s: %s", self.title, self.root, self.scan_report.summary())
        self._full = self.attribute_label(self._table)
        self.loader = ImageFolderLoader(
            self.config.resolution,
            self.config.crop,
            reference=self.reference,
            background=self.config.background,
            workers=self.config.workers,
        )

    def scan(self) -> None:
        """Fill ``self.files`` and ``self._table`` (one entry per kept sample), via ``_select``."""
        raise NotImplementedError

    def missing(self, path: Path, what: str) -> DataError:
        return DataError(f"{self.title}: {what} not found: {path}\nexpected layout:\n{self.layout}")

    @property
    def paths(self) -> list[Path]:
        """The image file of every sample (index order)."""
        if self._paths is None:
            self._paths = [Path(f) for f in self.files]
        return self._paths

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> dict[str, torch.Tensor]:
        return dict(self._full)

    def load(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        try:
            images, used = self.loader.load(indices, self.files.__getitem__, len(self.files))
        except DataError as e:
            raise DataError(f"{self.title} split {self.config.split!r} under {self.root}: {e}") from None
        idx = torch.tensor(used, dtype=torch.long)
        return {"image": images, **{k: v[idx] for k, v in self._full.items()}}

    def report(self) -> dict[str, Any]:
        r = self.loader.report
        return {"source": self.title, "root": str(self.root), "split": self.config.split, "files": len(self.files),
                "loaded": r.loaded, "skipped": r.num_skipped, "skipped_by_reason": dict(r.skipped),
                "converted": dict(r.converted), "replaced": r.replaced, "examples": r.examples,
                "scan_skipped": dict(self.scan_report.skipped), "scan_notes": dict(self.scan_report.notes),
                "summary": r.summary()}

    def _select(self, keep: Sequence[bool], paths: Sequence[str | Path], table: dict[str, Any]) -> None:
        """Store the rows marked ``keep``; integer columns become long tensors, float columns float32."""
        mask = np.asarray(keep, dtype=bool).reshape(-1)
        self.files = [str(p) for p, k in zip(paths, keep) if k]
        self._paths = None
        for name, values in table.items():
            arr = np.asarray(values).reshape(-1)[mask] if len(mask) else np.zeros(0, np.int64)
            if arr.dtype.kind == "f":
                self._table[name] = torch.from_numpy(arr.astype(np.float32))
            else:
                self._table[name] = torch.from_numpy(arr.astype(np.int64))

    def _split_keep(self, is_test: Sequence[bool]) -> list[bool]:
        split = self.config.split
        return [split == "all" or (t == (split == "test")) for t in is_test]


def _read_lines(path: Path, title: str, layout: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{title}: label file not found: {path}\nexpected layout:\n{layout}")
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"{title}: cannot read {path}: {e}") from None


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# -- CelebA ---------------------------------------------------------------------------------


class CelebA(_FileSource):
    """CelebA aligned faces with their 40 binary attributes (labels named as in the header)."""

    class Config(FileConfig):
        images: str = Field("img_align_celeba", description="image folder, relative to root")
        crop: Union[Literal["center", "stretch"], tuple[float, float, float, float]] = Field(
            (0, 20, 178, 198), description="box in pixels of the 178×218 aligned image (scaled for other sizes)"
        )
        val: Literal["none", "train", "test"] = Field(
            "none", description="which split the validation partition (1) joins"
        )

    title = "CelebA"
    provides = CELEBA_ATTRIBUTES
    reference = (178, 218)
    layout = """<root>/
├── img_align_celeba/000001.jpg …   (178×218 aligned JPEGs)
├── list_attr_celeba.txt            (count; 40 names; "000001.jpg -1 1 … 1")
├── list_eval_partition.txt         ("000001.jpg 0": 0 train, 1 val, 2 test)
└── identity_CelebA.txt             (optional: "000001.jpg 2880")"""

    @staticmethod
    def _find(root: Path, name: str) -> Path:
        for sub in ("", "Anno", "Eval", "anno", "eval"):
            if (root / sub / name).is_file():
                return root / sub / name
        return root / name

    @classmethod
    def provided_labels(cls, config: DataConfig) -> tuple[str, ...]:
        names: tuple[str, ...] = cls.provides
        root = Path(getattr(config, "root", "."))
        attr = cls._find(root, "list_attr_celeba.txt")
        try:
            with attr.open(encoding="utf-8-sig") as f:
                f.readline()
                names = tuple(f.readline().split()) or names
        except OSError:
            pass
        if cls._find(root, "identity_CelebA.txt").is_file():
            names += ("identity",)
        return names + (("attribute",) if config.attribute else ())

    def scan(self) -> None:
        image_dir = self.root / self.config.images
        if not image_dir.is_dir() and (self.root / "Img" / self.config.images).is_dir():
            image_dir = self.root / "Img" / self.config.images
        if not image_dir.is_dir():
            raise self.missing(image_dir, "image folder")
        attr_path = self._find(self.root, "list_attr_celeba.txt")
        names, files, values = self._parse_attributes(attr_path)
        keep = [True] * len(files)
        if self.config.split != "all":
            part = self._parse_two_columns(self._find(self.root, "list_eval_partition.txt"), {0, 1, 2})
            joins = {0: "train", 1: self.config.val, 2: "test"}
            keep = []
            for row, name in enumerate(files):
                if name not in part:
                    raise DataError(
                        f"{self._find(self.root, 'list_eval_partition.txt')}: no partition for {name} "
                        f"(listed in {attr_path} line {row + 3})"
                    )
                keep.append(joins[part[name]] == self.config.split)
        table: dict[str, Any] = {n: values[:, k] for k, n in enumerate(names)}
        id_path = self._find(self.root, "identity_CelebA.txt")
        if id_path.is_file():
            ids = self._parse_two_columns(id_path, None)
            missing = [f for f in files if f not in ids]
            if missing:
                raise DataError(f"{id_path}: no identity for {missing[0]} (and {len(missing) - 1} more)")
            kept_ids = [ids[f] for f, k in zip(files, keep) if k]
            remap = {v: i for i, v in enumerate(sorted(set(kept_ids)))}
            table["identity"] = [remap.get(ids[f], -1) for f in files]
        self._select(keep, [f"{image_dir}/{f}" for f in files], table)

    def _parse_attributes(self, path: Path) -> tuple[list[str], list[str], np.ndarray]:
        lines = _read_lines(path, self.title, self.layout)
        if len(lines) < 2:
            raise DataError(f"{path}: needs a count on line 1 and the attribute names on line 2")
        try:
            count = int(lines[0].strip())
        except ValueError:
            raise DataError(f"{path}:1: expected the number of images, got {lines[0][:60]!r}") from None
        names = lines[1].split()
        if not names:
            raise DataError(f"{path}:2: expected the attribute names")
        files: list[str] = []
        rests: list[str] = []
        for line in lines[2:]:
            parts = line.split(None, 1)
            if parts:
                files.append(parts[0])
                rests.append(parts[1] if len(parts) > 1 else "")
        # fast path: parse all values at once; on any doubt, find the faulty line
        values = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                flat = np.fromstring(" ".join(rests), dtype=np.int64, sep=" ")
            if flat.size == len(files) * len(names) and np.isin(flat, (-1, 1)).all():
                values = (flat.reshape(len(files), len(names)) > 0).astype(np.int64)
        except (ValueError, DeprecationWarning):
            pass
        if values is None:
            self._find_bad_attribute_line(path, lines, names)
            raise DataError(f"{path}: cannot parse the attribute values")
        if len(files) != count:
            raise DataError(f"{path}: line 1 says {count} images but {len(files)} lines follow")
        return names, files, values

    @staticmethod
    def _find_bad_attribute_line(path: Path, lines: list[str], names: list[str]) -> None:
        """Raise a DataError naming the first malformed line of ``list_attr_celeba.txt``."""
        for ln, line in enumerate(lines[2:], start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(names) + 1:
                raise DataError(
                    f"{path}:{ln}: expected a file name and {len(names)} values, got {len(parts) - 1} values"
                )
            for name, v in zip(names, parts[1:]):
                if v not in ("1", "-1"):
                    raise DataError(f"{path}:{ln}: value {v!r} of {name} is not -1 or 1")

    def _parse_two_columns(self, path: Path, allowed: set[int] | None) -> dict[str, int]:
        out = {}
        for ln, line in enumerate(_read_lines(path, self.title, self.layout), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{path}:{ln}: expected 'file number', got {line[:60]!r}")
            v = int(parts[1])
            if allowed is not None and v not in allowed:
                raise DataError(f"{path}:{ln}: value {v} is not one of {sorted(allowed)}")
            out[parts[0]] = v
        return out


# -- UTKFace ----------------------------------------------------------------------------------


class UTKFace(_FileSource):
    """UTKFace: labels from file names ``[age]_[gender]_[race]_[date].jpg.chip.jpg``."""

    class Config(FileConfig):
        test_fraction: float = Field(0.1, ge=0.0, le=1.0, description="share of files (by name hash) in 'test'")

    title = "UTKFace"
    provides = ("age", "age_group", "gender", "race")
    layout = """<root>/                                  (searched recursively)
├── 25_0_2_20170116174525125.jpg.chip.jpg   ([age]_[gender]_[race]_[date]; gender 0 male,
├── 39_1_20170116174525125.jpg.chip.jpg      1 female; race 0-4; a missing race reads as -1)
└── …"""

    def scan(self) -> None:
        files = _image_files(self.root)
        if not files:
            raise self.missing(self.root / "*.jpg.chip.jpg", "image files")
        paths, is_test, table = [], [], {"age": [], "age_group": [], "gender": [], "race": []}
        for path in files:
            parsed = self.parse_name(path.name)
            if isinstance(parsed, str):
                self.scan_report.skip(parsed, path.name)
                continue
            age, gender, race = parsed
            if race < 0:
                self.scan_report.note("race missing (race = -1)", path.name)
            paths.append(path)
            is_test.append(hash_fraction(path.name) < self.config.test_fraction)
            table["age"].append(float(age))
            table["age_group"].append(age_group(age))
            table["gender"].append(gender)
            table["race"].append(race)
        self._select(self._split_keep(is_test), paths, table)

    @staticmethod
    def parse_name(name: str) -> tuple[int, int, int] | str:
        """``(age, gender, race)`` of a file name (race -1 if absent), or why it is unusable."""
        fields = name.split(".")[0].split("_")
        if not all(f.isdigit() for f in fields) or len(fields) not in (3, 4):
            return "unparseable name"
        if len(fields) == 3:
            if len(fields[2]) < 8:  # third field is not a date: no date at all
                return "unparseable name"
            fields = [fields[0], fields[1], "-1", fields[2]]
        age, gender, race = int(fields[0]), int(fields[1]), int(fields[2])
        if not 0 <= age <= 150:
            return "age out of range"
        if gender not in (0, 1):
            return "gender not 0/1"
        if not -1 <= race <= 4:
            return "race not 0-4"
        return age, gender, race


# -- Multi-PIE --------------------------------------------------------------------------------

_MULTIPIE_NAME = re.compile(r"^(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.(png|jpg|jpeg)$", re.IGNORECASE)


class MultiPIE(_FileSource):
    """Multi-PIE-style names ``SSS_NN_RR_CCC_II.png`` (subject, session, recording, camera, light)."""

    class Config(FileConfig):
        poses: Union[Literal["all", "drgan9"], list[str]] = Field(
            "all", description="'all' 13 cameras, 'drgan9' (±60°), or a list of cameras like ['05_1', '14_0']"
        )
        train_subjects: int = Field(200, ge=0, description="the first N subjects (sorted ids) train, the rest test")
        illuminations: list[int] | None = Field(None, description="keep only these illuminations (0-19)")
        expressions: list[str] | None = Field(None, description="keep only these, e.g. ['neutral']")
        sessions: list[int] | None = Field(None, description="keep only these sessions (1-4)")

        @field_validator("poses")
        @classmethod
        def _check_poses(cls, v: Any) -> Any:
            if isinstance(v, list):
                bad = [c for c in v if c not in MULTIPIE_CAMERAS]
                if bad or not v:
                    raise ValueError(f"unknown cameras {bad}; head-height cameras are {list(MULTIPIE_CAMERAS)}")
            return v

        @field_validator("expressions")
        @classmethod
        def _check_expressions(cls, v: Any) -> Any:
            if v is not None and any(e not in MULTIPIE_EXPRESSIONS for e in v):
                raise ValueError(f"expressions must be among {list(MULTIPIE_EXPRESSIONS)}")
            return v

    title = "Multi-PIE"
    provides = ("identity", "subject", "pose", "yaw", "illumination", "session", "recording", "expression")
    layout = """<root>/                                     (searched recursively)
└── session01/multiview/001/01/05_1/
    ├── 001_01_01_051_07.png                 (subject_session_recording_camera_illumination;
    └── 001_01_01_051_08.png …                camera 051 = 05_1, frontal)"""

    def cameras(self) -> tuple[str, ...]:
        """The cameras kept, in yaw order; ``pose`` indexes this tuple."""
        p = self.config.poses
        if p == "all":
            return MULTIPIE_CAMERAS
        if p == "drgan9":
            return MULTIPIE_DRGAN9
        return tuple(c for c in MULTIPIE_CAMERAS if c in p)

    def scan(self) -> None:
        files = _image_files(self.root)
        if not files:
            raise self.missing(self.root / "session01/multiview/…/SSS_NN_RR_CCC_II.png", "image files")
        cams = self.cameras()
        c = self.config
        rows: list[tuple[Path, int, int, int, str, int]] = []
        for path in files:
            m = _MULTIPIE_NAME.match(path.name)
            if not m:
                self.scan_report.skip("unparseable name", path.name)
                continue
            subject, session, rec, cam, light = (int(g) if i != 3 else g for i, g in enumerate(m.groups()[:5]))
            camera = f"{cam[:2]}_{cam[2]}"
            if camera not in MULTIPIE_CAMERAS:
                self.scan_report.skip("camera not at head height", path.name)
                continue
            rows.append((path, subject, session, rec, camera, light))
        subjects = sorted({r[1] for r in rows})
        train = set(subjects[: c.train_subjects])
        paths, is_test = [], []
        table: dict[str, list] = {k: [] for k in self.provides}
        for path, subject, session, rec, camera, light in rows:
            expression = MULTIPIE_RECORDINGS.get((session, rec), -1)
            expression_name = MULTIPIE_EXPRESSIONS[expression] if expression >= 0 else "unknown"
            if (
                camera not in cams
                or (c.illuminations is not None and light not in c.illuminations)
                or (c.sessions is not None and session not in c.sessions)
                or (c.expressions is not None and expression_name not in c.expressions)
            ):
                self.scan_report.note("left out by the config", path.name)
                continue
            paths.append(path)
            is_test.append(subject not in train)
            table["subject"].append(subject)
            table["pose"].append(cams.index(camera))
            table["yaw"].append(float(-90 + 15 * MULTIPIE_CAMERAS.index(camera)))
            table["illumination"].append(light)
            table["session"].append(session - 1)
            table["recording"].append(rec - 1)
            table["expression"].append(expression)
        keep = self._split_keep(is_test)
        kept_subjects = sorted({s for s, k in zip(table["subject"], keep) if k})
        remap = {s: i for i, s in enumerate(kept_subjects)}
        table["identity"] = [remap.get(s, -1) for s in table["subject"]]
        self._select(keep, paths, table)


# -- CFP --------------------------------------------------------------------------------------


@dataclass
class CFPProtocol:
    """CFP's 10-fold verification protocol.

    ``frontal`` / ``profile`` map the pair-list indices to image keys ``"001/frontal/01.jpg"``;
    ``folds[setting][k]`` holds the ``same`` and ``diff`` index pairs of fold k (setting ``"FF"``
    or ``"FP"``; in FP the first index is frontal, the second profile).
    """

    frontal: dict[int, str]
    profile: dict[int, str]
    folds: dict[str, list[dict[str, list[tuple[int, int]]]]]


def _cfp_key(text: str) -> str:
    """``"../Data/Images/001/frontal/01.jpg"`` → ``"001/frontal/01.jpg"``."""
    parts = text.replace("\\", "/").split("/")
    return "/".join(parts[-3:])


class CFP(_FileSource):
    """Celebrities in Frontal-Profile: ``Data/Images/NNN/{frontal,profile}/NN.jpg``."""

    class Config(FileConfig):
        train_subjects: int = Field(
            400, ge=0, description="the first N subjects train, the rest test (CFP has no official split)"
        )

    title = "CFP"
    provides = ("identity", "subject", "pose")
    layout = """<root>/
├── Data/Images/001/frontal/01.jpg … 10.jpg
├── Data/Images/001/profile/01.jpg … 04.jpg
└── Protocol/                               (optional: verification protocol)
    ├── Pair_list_F.txt, Pair_list_P.txt    ("1 ../Data/Images/001/frontal/01.jpg")
    └── Split/{FF,FP}/01…10/{same,diff}.txt ("i,j" per line)"""

    def scan(self) -> None:
        images = self.root / "Data" / "Images"
        if not images.is_dir():
            raise self.missing(images, "image folder")
        rows = []
        for path in _image_files(images):
            rel = path.relative_to(images).parts
            if len(rel) != 3 or rel[1] not in ("frontal", "profile") or not rel[0].isdigit():
                self.scan_report.skip("not NNN/{frontal,profile}/NN.jpg", "/".join(rel))
                continue
            rows.append((path, int(rel[0]), int(rel[1] == "profile")))
        subjects = sorted({r[1] for r in rows})
        train = set(subjects[: self.config.train_subjects])
        keep = self._split_keep([s not in train for _, s, _ in rows])
        remap = {s: i for i, s in enumerate(sorted({r[1] for r, k in zip(rows, keep) if k}))}
        table = {
            "identity": [remap.get(s, -1) for _, s, _ in rows],
            "subject": [s for _, s, _ in rows],
            "pose": [p for _, _, p in rows],
        }
        self._select(keep, [r[0] for r in rows], table)
        self._protocol: CFPProtocol | None | bool = False

    @property
    def protocol(self) -> CFPProtocol | None:
        """The parsed ``Protocol/`` folder, or None when the dataset has none."""
        if self._protocol is False:
            self._protocol = self._parse_protocol()
        return self._protocol  # type: ignore[return-value]

    def _parse_protocol(self) -> CFPProtocol | None:
        proto = self.root / "Protocol"
        if not proto.is_dir():
            return None
        lists = {}
        for which in ("F", "P"):
            path = proto / f"Pair_list_{which}.txt"
            table: dict[int, str] = {}
            for ln, line in enumerate(_read_lines(path, self.title, self.layout), start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[0].isdigit():
                    raise DataError(f"{path}:{ln}: expected 'index path', got {line[:60]!r}")
                table[int(parts[0])] = _cfp_key(parts[1])
            lists[which] = table
        folds: dict[str, list[dict[str, list[tuple[int, int]]]]] = {}
        for setting in ("FF", "FP"):
            base = proto / "Split" / setting
            if not base.is_dir():
                continue
            folds[setting] = []
            for fold_dir in sorted(d for d in base.iterdir() if d.is_dir()):
                fold: dict[str, list[tuple[int, int]]] = {}
                for kind in ("same", "diff"):
                    path = fold_dir / f"{kind}.txt"
                    pairs = []
                    for ln, line in enumerate(_read_lines(path, self.title, self.layout), start=1):
                        if not line.strip():
                            continue
                        parts = line.replace(" ", "").split(",")
                        if len(parts) != 2 or not all(p.isdigit() for p in parts):
                            raise DataError(f"{path}:{ln}: expected 'i,j', got {line[:60]!r}")
                        pairs.append((int(parts[0]), int(parts[1])))
                    fold[kind] = pairs
                folds[setting].append(fold)
        return CFPProtocol(frontal=lists["F"], profile=lists["P"], folds=folds)

    def pairs(self, setting: str, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample indices ``[P, 2]`` of this source and same-identity flags ``[P]`` of one fold
        (0-based) of setting ``"FF"`` or ``"FP"``; pairs with an image outside this source are dropped."""
        proto = self.protocol
        if proto is None:
            raise self.missing(self.root / "Protocol", "protocol folder")
        if setting not in proto.folds or not 0 <= fold < len(proto.folds[setting]):
            raise DataError(f"CFP protocol has no fold {fold} of setting {setting!r}")
        images = self.root / "Data" / "Images"
        where = {Path(p).relative_to(images).as_posix(): i for i, p in enumerate(self.files)}
        second = proto.profile if setting == "FP" else proto.frontal
        idx, same = [], []
        for kind in ("same", "diff"):
            for a, b in proto.folds[setting][fold][kind]:
                ia, ib = where.get(proto.frontal.get(a, "")), where.get(second.get(b, ""))
                if ia is not None and ib is not None:
                    idx.append((ia, ib))
                    same.append(int(kind == "same"))
        return torch.tensor(idx, dtype=torch.long).reshape(-1, 2), torch.tensor(same, dtype=torch.long)


# -- 3D chairs --------------------------------------------------------------------------------

_CHAIR_NAME = re.compile(r"^image_(\d+)_p(\d+)_t(\d+)_r(\d+)\.png$", re.IGNORECASE)


class Chairs3D(_FileSource):
    """Aubry et al.'s rendered chairs: ``rendered_chairs/<model>/renders/image_NNN_pEEE_tAAA_r096.png``."""

    class Config(FileConfig):
        train_models: int = Field(500, ge=0, description="the first N models (sorted names) train, the rest test")
        elevations: list[int] | None = Field(None, description="keep only these elevations in degrees, e.g. [20]")
        background: tuple[int, int, int] = Field((255, 255, 255), description="RGB under transparent pixels")

    title = "3D chairs"
    provides = ("identity", "view", "elevation", "azimuth")
    layout = """<root>/rendered_chairs/                   (or <root> itself)
├── 1a6f615e8b1b5ae4dbbc9440457e303e/renders/
│   ├── image_001_p020_t000_r096.png       (p: elevation°, t: azimuth°, r: distance)
│   └── image_002_p020_t011_r096.png …
└── …"""

    def scan(self) -> None:
        base = self.root / "rendered_chairs" if (self.root / "rendered_chairs").is_dir() else self.root
        files = sorted(base.glob("*/renders/*"))
        if not files:
            raise self.missing(base / "<model>/renders/image_NNN_pEEE_tAAA_r096.png", "renders")
        rows = []
        for path in files:
            m = _CHAIR_NAME.match(path.name)
            if not m:
                self.scan_report.skip("unparseable name", path.relative_to(base).as_posix())
                continue
            rows.append((path, path.parent.parent.name, int(m.group(2)), int(m.group(3))))
        azimuths = sorted({r[3] for r in rows})
        elevations = sorted({r[2] for r in rows})
        models = sorted({r[1] for r in rows})
        train = set(models[: self.config.train_models])
        wanted = self.config.elevations
        keep = []
        for (path, model, elev, az), in_split in zip(rows, self._split_keep([r[1] not in train for r in rows])):
            ok = wanted is None or elev in wanted
            if not ok:
                self.scan_report.note("left out by the config", path.name)
            keep.append(in_split and ok)
        remap = {m: i for i, m in enumerate(sorted({r[1] for r, k in zip(rows, keep) if k}))}
        table = {
            "identity": [remap.get(r[1], -1) for r in rows],
            "view": [azimuths.index(r[3]) for r in rows],
            "elevation": [elevations.index(r[2]) for r in rows],
            "azimuth": [float(r[3]) for r in rows],
        }
        self.models = sorted(remap, key=remap.__getitem__)
        self._select(keep, [r[0] for r in rows], table)


# -- generic folder + CSV ---------------------------------------------------------------------


class Folder(_FileSource):
    """Any folder of images with a CSV of labels (``path`` column plus one column per label).

    Column types: all integers → class labels (long); all numbers → continuous (float);
    anything else → categories, remapped to 0..K-1 in sorted order (``source.categories``).
    Empty cells read as -1 (classes, categories) or NaN (floats).
    """

    class Config(FileConfig):
        csv: str = Field("labels.csv", description="the label CSV, relative to root (or absolute)")
        path_column: str = Field("path", description="CSV column holding image paths (relative to root)")
        split_column: str = Field("split", description="CSV column with train/test per row, if present")
        test_fraction: float = Field(0.1, ge=0.0, le=1.0, description="without a split column: share in 'test'")

    title = "image folder"
    layout = """<root>/
├── labels.csv                 (header "path,<label>,<label>,…"; one row per image)
└── images/0001.png …          (paths in the CSV are relative to <root>)"""

    @classmethod
    def provided_labels(cls, config: DataConfig) -> tuple[str, ...]:
        path = Path(getattr(config, "root", ".")) / getattr(config, "csv", "labels.csv")
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
        except OSError:
            header = []
        skip = {getattr(config, "path_column", "path"), getattr(config, "split_column", "split")}
        return tuple(h.strip() for h in header if h.strip() not in skip) + (("attribute",) if config.attribute else ())

    def scan(self) -> None:
        c = self.config
        path = Path(c.csv) if Path(c.csv).is_absolute() else self.root / c.csv
        if not path.is_file():
            raise self.missing(path, "label CSV")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if c.path_column not in header:
                raise DataError(f"{path}:1: no {c.path_column!r} column in the header {header}")
            if len(set(header)) != len(header):
                raise DataError(f"{path}:1: repeated column names in the header {header}")
            rows, line_of = [], []
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} cells but the header has {len(header)}")
                rows.append([cell.strip() for cell in row])
                line_of.append(reader.line_num)
        pi = header.index(c.path_column)
        paths = []
        for row, ln in zip(rows, line_of):
            if not row[pi]:
                raise DataError(f"{path}:{ln}: empty {c.path_column!r}")
            p = Path(row[pi])
            paths.append(p if p.is_absolute() else self.root / p)
        if c.split_column in header:
            si = header.index(c.split_column)
            is_test = []
            for row, ln in zip(rows, line_of):
                if row[si] not in ("train", "test"):
                    raise DataError(f"{path}:{ln}: {c.split_column!r} must be 'train' or 'test', not {row[si]!r}")
                is_test.append(row[si] == "test")
        else:
            is_test = [hash_fraction(row[pi]) < c.test_fraction for row in rows]
        self.categories: dict[str, list[str]] = {}
        self.column_types: dict[str, str] = {}
        table: dict[str, list] = {}
        for k, name in enumerate(header):
            if name in (c.path_column, c.split_column):
                continue
            table[name] = self._column(name, [row[k] for row in rows])
        self._select(self._split_keep(is_test), paths, table)

    def _column(self, name: str, cells: list[str]) -> list:
        present = [v for v in cells if v]
        if all(re.fullmatch(r"[+-]?\d+", v) for v in present):
            self.column_types[name] = "class"
            return [int(v) if v else -1 for v in cells]
        try:
            values = [float(v) if v else math.nan for v in cells]
            self.column_types[name] = "float"
            return values
        except ValueError:
            pass
        self.column_types[name] = "category"
        self.categories[name] = sorted(set(present))
        index = {v: i for i, v in enumerate(self.categories[name])}
        return [index[v] if v else -1 for v in cells]
