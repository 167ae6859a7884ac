"""Write any data source's samples in a real dataset's on-disk layout.

``export(SynthFaces(...), "celeba", 100, "out/")`` writes ``out/img_align_celeba/*.jpg``
plus ``list_attr_celeba.txt`` etc., exactly as :class:`gancore.data.readers.CelebA`
reads them, so a user can look at the data and the readers are tested against it.
Only the :class:`~gancore.data.base.DataSource` API is used (``len``, ``labels()``,
``load(indices)``), so it works with every source.  docs/datasets.md lists what each
format takes from the labels.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gancore.data.base import DataError, DataSource
from gancore.data.readers import CELEBA_ATTRIBUTES, MULTIPIE_CAMERAS

__all__ = ["export", "ExportResult", "FORMATS", "UTKFACE_NO_RACE"]

#: formats :func:`export` writes (the names of the matching readers).
FORMATS = ("celeba", "utkface", "multipie", "cfp", "chairs3d", "folder")

#: a representative age of each CAAE age group (for sources with ``age_group`` only).
_GROUP_AGE = (3, 8, 13, 18, 25, 35, 45, 55, 65, 75)
#: UTKFace's race field (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others) for a sample without a
#: race label in 0..4: synthetic faces have none (their skin tone is not a race), so "Others".
UTKFACE_NO_RACE = 4
#: genuine (and as many impostor) pairs per fold of CFP's verification protocol.
_CFP_PAIRS = 350
#: expression index → (session, recording) in Multi-PIE's capture protocol.
_EXPRESSION_RECORDING = {0: (1, 1), 1: (1, 2), 2: (2, 2), 3: (2, 3), 4: (3, 3), 5: (4, 3)}


@dataclass
class ExportResult:
    """What :func:`export` wrote: ``indices[k]`` of the source became file ``paths[k]``."""

    format: str
    out_dir: Path
    indices: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        s = f"wrote {len(self.paths)} {self.format} samples to {self.out_dir}"
        if self.skipped:
            s += " (skipped: " + ", ".join(f"{n} × {why}" for why, n in sorted(self.skipped.items())) + ")"
        return s


class _Skip(Exception):
    """This sample cannot be written in this format (the reason is counted)."""


def _to_pil(image: torch.Tensor, width: int, height: int) -> Image.Image:
    x = image.detach().float().cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = ((x[:3].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    return img


def _scalar(v: torch.Tensor) -> int | float:
    return float(v) if v.dtype.is_floating_point else int(v)


def export(
    source: DataSource,
    format: str,
    n: int,
    out_dir: str | Path,
    resolution: int | None = None,
    *,
    seed: int | None = 0,
    batch_size: int = 64,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``n`` samples of ``source`` to ``out_dir`` in the on-disk layout of ``format``.

    :param format: one of :data:`FORMATS`; the matching reader (``gancore.data.readers``)
        reads the result back with ``root=out_dir`` (``split="all"`` for every sample).
    :param n: number of samples (at most ``len(source)``).
    :param resolution: side of the written images (default: the source's resolution);
        ``celeba`` writes CelebA's 178:218 aligned shape, the face filling the default crop.
    :param seed: which samples: a random subset fixed by this seed, or the first ``n`` if None.
    :param overwrite: allow writing into a non-empty ``out_dir``.
    :returns: an :class:`ExportResult`; samples a format cannot express (such as two images
        that would get the same Multi-PIE name) are skipped and counted there.
    :raises DataError: unknown format, labels the format needs are missing, or ``out_dir`` not empty.
    """
    if format not in FORMATS:
        raise DataError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} is not empty (pass overwrite=True to write into it)")
    total = len(source)
    if n < 1 or total == 0:
        raise DataError(f"nothing to export: n = {n}, the source has {total} samples")
    n = min(n, total)
    if seed is None:
        indices = list(range(n))
    else:
        g = torch.Generator().manual_seed(seed)
        indices = sorted(torch.randperm(total, generator=g)[:n].tolist())
    table = {k: v for k, v in source.labels().items() if k != "attribute"}
    res = resolution or int(getattr(getattr(source, "config", None), "resolution", 64))
    test = getattr(getattr(source, "config", None), "split", "train") == "test"
    writer = _WRITERS[format](out, table, res, test)
    result = ExportResult(format, out)
    for start in range(0, n, batch_size):
        chunk = indices[start : start + batch_size]
        batch = source.load(chunk)
        for row, index in enumerate(chunk):
            labels = {k: _scalar(batch[k][row]) for k in table if k in batch}
            try:
                rel, save = writer.place(len(result.paths), labels)
            except _Skip as why:
                result.skipped[str(why)] += 1
                continue
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            save(batch["image"][row], path)
            writer.add(rel, labels)
            result.indices.append(index)
            result.paths.append(path)
    writer.finish()
    return result


class _Writer:
    """One format: where each sample goes (``place``) and the label files (``finish``)."""

    def __init__(self, out: Path, table: dict[str, torch.Tensor], res: int, test: bool) -> None:
        self.out, self.table, self.res, self.test = out, table, res, test
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.taken: set[str] = set()

    def need(self, *alternatives: str) -> None:
        if not any(a in self.table for a in alternatives):
            have = ", ".join(sorted(self.table)) or "none"
            raise DataError(
                f"export to {type(self).__name__[1:].lower()} needs label {' or '.join(alternatives)}; "
                f"the source has: {have}"
            )

    def classes(self, name: str) -> int:
        v = self.table[name]
        return int(v.max()) + 1 if v.numel() else 0

    def saver(self, ext: str, width: int | None = None, height: int | None = None) -> Callable:
        w, h = width or self.res, height or self.res

        def save(image: torch.Tensor, path: Path) -> None:
            img = _to_pil(image, w, h)
            if ext == "jpg":
                img.save(path, quality=95)
            else:
                img.save(path)

        return save

    def unique(self, rel: str) -> str:
        if rel in self.taken:
            raise _Skip("same file name as an earlier sample")
        self.taken.add(rel)
        return rel

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        raise NotImplementedError

    def add(self, rel: str, labels: dict[str, Any]) -> None:
        self.rows.append((rel, labels))

    def finish(self) -> None:
        pass


class _Celeba(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        binary = [
            k
            for k, v in self.table.items()
            if k != "identity"
            and not v.dtype.is_floating_point
            and v.numel()
            and int(v.min()) >= 0
            and int(v.max()) <= 1
        ]
        # CelebA's own attribute names if the source has any (in file order), else every binary label
        self.names = [a for a in CELEBA_ATTRIBUTES if a in binary] or binary
        if not self.names:
            raise DataError(f"export to celeba needs binary 0/1 labels; the source has: {', '.join(self.table)}")
        self.height = round(self.res * 218 / 178)
        self.top = round(self.res * 20 / 178)

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        res, height, top = self.res, self.height, self.top

        def save(image: torch.Tensor, path: Path) -> None:  # face in the crop box, edges replicated
            face = np.asarray(_to_pil(image, res, res))
            canvas = np.pad(face, ((top, height - res - top), (0, 0), (0, 0)), mode="edge")
            Image.fromarray(canvas).save(path, quality=95)

        return f"img_align_celeba/{k + 1:06d}.jpg", save

    def finish(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        lines = [str(len(self.rows)), " ".join(self.names)]
        for rel, lab in self.rows:
            lines.append(Path(rel).name + " " + " ".join("1" if lab[n] else "-1" for n in self.names))
        (self.out / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        part = "2" if self.test else "0"
        (self.out / "list_eval_partition.txt").write_text("".join(f"{Path(r).name} {part}\n" for r, _ in self.rows))
        if "identity" in self.table:
            text = "".join(f"{Path(r).name} {lab['identity'] + 1}\n" for r, lab in self.rows)
            (self.out / "identity_CelebA.txt").write_text(text)


class _Utkface(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.need("age", "age_group")
        self.need("gender", "Male")

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        if "age" in labels:
            age = labels["age"]
            if isinstance(age, float) and math.isnan(age):
                raise _Skip("age is NaN")
            age = int(min(max(round(age), 0), 116))
        else:
            age = _GROUP_AGE[min(max(int(labels["age_group"]), 0), 9)]
        gender = int(labels["gender"]) if "gender" in labels else 1 - int(labels["Male"])
        if gender not in (0, 1):
            raise _Skip("gender not 0/1")
        race = labels.get("race")
        race = int(race) if race is not None and 0 <= race <= 4 else UTKFACE_NO_RACE
        name = f"{age}_{gender}_{race}_20170101{k:09d}.jpg.chip.jpg"
        return self.unique(f"UTKFace/{name}"), self.saver("jpg")


class _Multipie(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.need("identity")

    def camera(self, labels: dict[str, Any]) -> str:
        if "yaw" in labels:
            i = round((float(labels["yaw"]) + 90) / 15)
            return MULTIPIE_CAMERAS[min(max(i, 0), 12)]
        if "pose" in labels:  # P evenly spaced poses → the P central cameras
            p, count = int(labels["pose"]), self.classes("pose")
            if count > 13 or not 0 <= p < count:
                raise _Skip("pose not one of at most 13 classes")
            return MULTIPIE_CAMERAS[p + (13 - count) // 2]
        return "05_1"

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        subject = int(labels["identity"]) + 1
        if not 1 <= subject <= 999:
            raise _Skip("identity beyond 998")
        if "session" in labels and "recording" in labels:
            session, rec = int(labels["session"]) + 1, int(labels["recording"]) + 1
        elif "expression" in labels:
            if int(labels["expression"]) not in _EXPRESSION_RECORDING:
                raise _Skip("expression not one of Multi-PIE's 6")
            session, rec = _EXPRESSION_RECORDING[int(labels["expression"])]
        else:
            session, rec = 1, 1
        light = labels.get("illumination", labels.get("light", 7))
        light = int(light) % 20 if isinstance(light, int) else 7
        cam = self.camera(labels)
        name = f"{subject:03d}_{session:02d}_{rec:02d}_{cam.replace('_', '')}_{light:02d}.png"
        rel = f"session{session:02d}/multiview/{subject:03d}/{rec:02d}/{cam}/{name}"
        return self.unique(rel), self.saver("png")


class _Cfp(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.need("identity")
        self.need("pose", "yaw")
        self.count: Counter = Counter()

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        subject = int(labels["identity"]) + 1
        if not 1 <= subject <= 999:
            raise _Skip("identity beyond 998")
        if "yaw" in labels:
            profile = abs(float(labels["yaw"])) >= 45
        else:
            profile = int(labels["pose"]) != 0
        kind = "profile" if profile else "frontal"
        self.count[subject, kind] += 1
        return f"Data/Images/{subject:03d}/{kind}/{self.count[subject, kind]:02d}.jpg", self.saver("jpg")

    def finish(self) -> None:
        """``Protocol/`` as CFP ships it, so the 10-fold verification protocol runs on the export.

        ``Pair_list_F.txt`` / ``Pair_list_P.txt`` number the frontal / profile images from 1
        (``"index ../Data/Images/NNN/frontal/NN.jpg"``); ``Split/{FF,FP}/NN/{same,diff}.txt``
        hold ``i,j`` pairs of those numbers (FP: frontal first).  As in CFP the folds are
        identity-disjoint: subjects are dealt round-robin into 10 folds (fewer when there are
        under 20 subjects, so that each fold has two).
        Each fold gets up to ``pairs_per_fold`` genuine pairs (two frontal images of one subject;
        FP: a frontal and a profile one) and as many impostor pairs (two subjects of the fold),
        drawn with a fixed seed.
        """
        proto = self.out / "Protocol"
        frontal, profile = {}, {}
        for rel, _ in self.rows:
            parts = rel.split("/")  # Data/Images/NNN/kind/NN.jpg
            (profile if parts[3] == "profile" else frontal)[rel] = len(profile if parts[3] == "profile" else frontal) + 1
        proto.mkdir(parents=True, exist_ok=True)
        for name, table in (("Pair_list_F.txt", frontal), ("Pair_list_P.txt", profile)):
            (proto / name).write_text("".join(f"{i} ../{rel}\n" for rel, i in table.items()))
        by_subject: dict[int, dict[str, list[int]]] = {}
        for rel, i in [*frontal.items(), *profile.items()]:
            parts = rel.split("/")
            by_subject.setdefault(int(parts[2]), {"frontal": [], "profile": []})[parts[3]].append(i)
        subjects = sorted(s for s, v in by_subject.items() if v["frontal"])
        folds = min(10, len(subjects) // 2)
        if folds < 2:
            return  # a 10-fold protocol needs two folds of two subjects at least
        rng = np.random.default_rng(0)
        for setting, second in (("FF", "frontal"), ("FP", "profile")):
            for k in range(folds):
                members = subjects[k::folds]
                same = []
                for s in members:
                    a_list, b_list = by_subject[s]["frontal"], by_subject[s][second]
                    same += [(a, b) for a in a_list for b in b_list if setting == "FP" or a < b]
                if len(same) > _CFP_PAIRS:
                    same = [same[j] for j in sorted(rng.choice(len(same), _CFP_PAIRS, replace=False))]
                diff = _impostor_pairs(by_subject, members, second, len(same), rng)
                fold_dir = proto / "Split" / setting / f"{k + 1:02d}"
                fold_dir.mkdir(parents=True, exist_ok=True)
                (fold_dir / "same.txt").write_text("".join(f"{a},{b}\n" for a, b in same))
                (fold_dir / "diff.txt").write_text("".join(f"{a},{b}\n" for a, b in diff))


def _impostor_pairs(by_subject: dict[int, dict[str, list[int]]], members: list[int], second: str, want: int,
                    rng: np.random.Generator) -> list[tuple[int, int]]:
    """``want`` distinct (frontal of one subject, ``second`` image of another) pairs among
    ``members``, drawn at random (all of them when there are no more than ``want``)."""
    first = [(s, i) for s in members for i in by_subject[s]["frontal"]]
    other = [(s, j) for s in members for j in by_subject[s][second]]
    possible = len(first) * len(other) - sum(len(by_subject[s]["frontal"]) * len(by_subject[s][second]) for s in members)
    if possible <= want:
        return [(i, j) for s, i in first for t, j in other if s != t]
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < want:
        a = rng.integers(len(first), size=2 * want)
        b = rng.integers(len(other), size=2 * want)
        for x, y in zip(a.tolist(), b.tolist()):
            if first[x][0] != other[y][0]:
                chosen.setdefault((first[x][1], other[y][1]), None)
                if len(chosen) == want:
                    break
    return list(chosen)


class _Chairs3d(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.need("identity")
        self.need("azimuth", "view")
        self.count: Counter = Counter()

    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        model = int(labels["identity"])
        if "azimuth" in labels:
            az = int(round(float(labels["azimuth"]))) % 360
        else:
            az = int(math.floor(int(labels["view"]) * 360 / max(self.classes("view"), 1)))
        elev = labels.get("elevation", 0)
        elev = int(round(elev)) if isinstance(elev, float) else 20 + 10 * int(elev)
        base = f"rendered_chairs/chair{model:05d}/renders"
        key = f"{base}/p{elev:03d}_t{az:03d}"
        self.unique(key)
        self.count[model] += 1
        return f"{base}/image_{self.count[model]:03d}_p{elev:03d}_t{az:03d}_r096.png", self.saver("png")


class _Folder(_Writer):
    def place(self, k: int, labels: dict[str, Any]) -> tuple[str, Callable]:
        return f"images/{k:06d}.png", self.saver("png")

    def finish(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        names = [k for k in self.table if k not in ("path", "split")]
        with (self.out / "labels.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", *names, "split"])
            for rel, lab in self.rows:
                cells = [repr(float(lab[n])) if isinstance(lab[n], float) else str(lab[n]) for n in names]
                w.writerow([rel, *cells, "test" if self.test else "train"])


_WRITERS: dict[str, type[_Writer]] = {
    "celeba": _Celeba,
    "utkface": _Utkface,
    "multipie": _Multipie,
    "cfp": _Cfp,
    "chairs3d": _Chairs3d,
    "folder": _Folder,
}
