"""export(): any DataSource → a real on-disk layout, read back by the matching reader."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from pydantic import Field

from gancore.data.base import DataConfig, DataError, DataSource
from gancore.data.readers import CFP, CelebA, Chairs3D, Folder, MultiPIE, UTKFace, age_group
from gancore_synth.export import FORMATS, UTKFACE_NO_RACE, export


class Fake(DataSource):
    """Smooth random images and labels of every kind the formats read."""

    class Config(DataConfig):
        size: int = Field(12, ge=1)

    provides = (
        "identity", "age", "age_group", "gender", "race", "Eyeglasses", "Smiling", "Male",
        "yaw", "pose", "light", "expression", "view", "elevation", "azimuth",
    )  # fmt: skip

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        n = self.config.size
        g = torch.Generator().manual_seed(1)
        i = torch.arange(n)
        age = torch.rand(n, generator=g) * 80
        yaw = (i % 13 * 15 - 90).float()
        view = i % 4
        self._labels = {
            "identity": i // 4 * 3,  # 0, 3, 6: sparse ids, as a subset would have
            "age": age,
            "age_group": torch.tensor([age_group(float(a)) for a in age]),
            "gender": i % 2,
            "race": i % 5,
            "Eyeglasses": (i // 2) % 2,
            "Smiling": (i // 3) % 2,
            "Male": 1 - i % 2,
            "yaw": yaw,
            "pose": ((yaw + 90) / 15).long(),
            "light": i % 20,
            "expression": i % 6,
            "view": view,
            "elevation": (i // 8) % 2,
            "azimuth": torch.floor(view * 360 / 31),
        }
        y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
        phase = torch.rand(n, 3, generator=g) * 6
        self._images = torch.sin(phase[:, :, None, None] + 2 * x + y).mul(0.8)

    def __len__(self) -> int:
        return self.config.size

    def labels(self) -> dict[str, torch.Tensor]:
        return self.attribute_label(dict(self._labels))

    def load(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        img = torch.nn.functional.interpolate(self._images[idx], size=self.config.resolution, mode="bilinear")
        return {"image": img, **{k: v[idx] for k, v in self.labels().items()}}


def _source_index(result, reader) -> list[int]:
    """For each sample of the reader, the source index that was exported to its file."""
    where = {p.resolve(): i for p, i in zip(result.paths, result.indices)}
    return [where[p.resolve()] for p in reader.paths]


def _remapped(values: torch.Tensor) -> torch.Tensor:
    order = {v: k for k, v in enumerate(sorted(set(values.tolist())))}
    return torch.tensor([order[v] for v in values.tolist()])


def _images_close(src: DataSource, reader: DataSource, idx: list[int], tol: float = 0.12) -> None:
    a = src.load(idx)["image"]
    b = reader.load(range(len(reader)))["image"]
    assert (a - b).abs().mean() < tol


def test_celeba_round_trip(tmp_path):
    src = Fake(resolution=32)
    res = export(src, "celeba", 12, tmp_path, seed=None)
    assert len(res.paths) == 12 and (tmp_path / "img_align_celeba" / "000001.jpg").is_file()
    first = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    assert first[:2] == ["12", "Eyeglasses Male Smiling"]
    reader = CelebA(root=tmp_path, resolution=32)
    idx = _source_index(res, reader)
    lab = reader.labels()
    for name in ("Eyeglasses", "Male", "Smiling"):
        assert torch.equal(lab[name], src.labels()[name][idx])
    assert torch.equal(lab["identity"], _remapped(src.labels()["identity"][idx]))
    _images_close(src, reader, idx)


def test_utkface_round_trip(tmp_path):
    src = Fake()
    res = export(src, "utkface", 10, tmp_path, resolution=24)
    reader = UTKFace(root=tmp_path, split="all", resolution=24)
    idx = _source_index(res, reader)
    lab, want = reader.labels(), src.labels()
    assert torch.equal(lab["age"], want["age"][idx].round())
    assert lab["age_group"].tolist() == [age_group(float(a)) for a in want["age"][idx].round()]
    assert torch.equal(lab["gender"], want["gender"][idx]) and torch.equal(lab["race"], want["race"][idx])
    for path in reader.paths:  # age_gender_race_date.jpg.chip.jpg, as the real dataset names its files
        assert path.name.endswith(".jpg.chip.jpg") and len(path.name.split(".")[0].split("_")) == 4, path.name


def test_multipie_round_trip(tmp_path):
    src = Fake()
    res = export(src, "multipie", 12, tmp_path)
    reader = MultiPIE(root=tmp_path, split="all")
    idx = _source_index(res, reader)
    lab, want = reader.labels(), src.labels()
    for name in ("yaw", "pose", "expression"):
        assert torch.equal(lab[name], want[name][idx]), name
    assert torch.equal(lab["illumination"], want["light"][idx])
    assert torch.equal(lab["subject"], want["identity"][idx] + 1)
    assert (tmp_path / "session01" / "multiview").is_dir()
    _images_close(src, reader, idx)


def test_cfp_round_trip(tmp_path):
    src = Fake()
    res = export(src, "cfp", 12, tmp_path)
    reader = CFP(root=tmp_path, split="all")
    idx = _source_index(res, reader)
    assert torch.equal(reader.labels()["pose"], (src.labels()["yaw"][idx].abs() >= 45).long())
    assert torch.equal(reader.labels()["identity"], _remapped(src.labels()["identity"][idx]))


def test_cfp_export_writes_the_verification_protocol(tmp_path):
    from gancore_synth.synthfaces import SynthFaces

    src = SynthFaces(profile="multipie", resolution=16, identities=20, size=400)  # ~20 images per identity
    export(src, "cfp", 400, tmp_path)
    reader = CFP(root=tmp_path, split="all")
    proto = reader.protocol
    assert proto is not None and set(proto.folds) == {"FF", "FP"} and len(proto.folds["FF"]) == 10
    assert all("/frontal/" in k for k in proto.frontal.values())
    assert all("/profile/" in k for k in proto.profile.values())
    ident = reader.labels()["identity"]
    fold_subjects = []
    for setting in ("FF", "FP"):
        for k in range(10):
            pairs, same = reader.pairs(setting, k)
            assert len(pairs) > 0 and int(same.sum()) == len(same) - int(same.sum())  # as many impostors
            a, b = ident[pairs[:, 0]], ident[pairs[:, 1]]
            assert torch.equal(a == b, same.bool())  # genuine pairs share the subject, impostors do not
            pose = reader.labels()["pose"]
            assert bool((pose[pairs[:, 0]] == 0).all())  # the first image is frontal
            assert bool((pose[pairs[:, 1]] == (1 if setting == "FP" else 0)).all())
            if setting == "FF":
                fold_subjects.append(set(a.tolist()) | set(b.tolist()))
    for i in range(10):  # identity-disjoint folds, as CFP's
        for j in range(i + 1, 10):
            assert not fold_subjects[i] & fold_subjects[j]


def test_chairs_round_trip(tmp_path):
    src = Fake()
    res = export(src, "chairs3d", 12, tmp_path)
    reader = Chairs3D(root=tmp_path, split="all")
    idx = _source_index(res, reader)
    lab, want = reader.labels(), src.labels()
    assert torch.equal(lab["azimuth"], want["azimuth"][idx])
    assert torch.equal(lab["view"], want["view"][idx])  # all 4 azimuths present: same order
    assert torch.equal(lab["elevation"], want["elevation"][idx])
    assert torch.equal(lab["identity"], _remapped(want["identity"][idx]))


def test_folder_round_trip_is_exact(tmp_path):
    src = Fake()
    res = export(src, "folder", 7, tmp_path, seed=3)
    reader = Folder(root=tmp_path)
    idx = _source_index(res, reader)
    assert len(reader) == 7 and idx == res.indices
    lab, want = reader.labels(), src.labels()
    for name, values in want.items():
        assert lab[name].dtype == values.dtype and torch.equal(lab[name], values[idx]), name
    _images_close(src, reader, idx, tol=0.02)


def test_export_errors_and_choices(tmp_path):
    src = Fake()
    with pytest.raises(DataError, match="unknown export format 'lfw'"):
        export(src, "lfw", 2, tmp_path / "a")
    export(src, "folder", 2, tmp_path / "b")
    with pytest.raises(DataError, match="is not empty"):
        export(src, "folder", 2, tmp_path / "b")
    assert len(export(src, "folder", 2, tmp_path / "b", overwrite=True).paths) == 2
    assert len(export(src, "folder", 99, tmp_path / "c").paths) == 12  # capped at len(source)
    a = export(src, "folder", 4, tmp_path / "d", seed=5).indices
    assert a == export(src, "folder", 4, tmp_path / "e", seed=5).indices
    assert export(src, "folder", 4, tmp_path / "f", seed=None).indices == [0, 1, 2, 3]

    class NoLabels(Fake):
        def labels(self):
            return {"light": self._labels["light"]}

    with pytest.raises(DataError, match="needs label identity"):
        export(NoLabels(), "multipie", 2, tmp_path / "g")
    with pytest.raises(DataError, match="needs label age or age_group"):
        export(NoLabels(), "utkface", 2, tmp_path / "h")
    with pytest.raises(DataError, match="celeba needs binary"):
        export(NoLabels(), "celeba", 2, tmp_path / "i")


def test_multipie_duplicate_names_are_skipped_and_counted(tmp_path):
    class Twins(Fake):
        def load(self, indices):
            out = super().load(indices)
            for k in ("identity", "yaw", "light", "expression"):
                out[k] = torch.zeros_like(out[k])
            return out

    res = export(Twins(size=3), "multipie", 3, tmp_path)
    assert len(res.paths) == 1 and res.skipped == {"same file name as an earlier sample": 2}
    assert "skipped: 2" in res.summary()


def test_formats_listed():
    assert set(FORMATS) == {"celeba", "utkface", "multipie", "cfp", "chairs3d", "folder"}


@pytest.mark.parametrize("fmt", ["celeba", "utkface", "multipie"])
def test_synthfaces_round_trip(tmp_path, fmt):
    from gancore_synth.synthfaces import SynthFaces

    profile = {"celeba": "celeba", "utkface": "utkface", "multipie": "multipie"}[fmt]
    src = SynthFaces(profile=profile, resolution=16, size=6, supersample=1)
    res = export(src, fmt, 4, tmp_path)
    want = src.labels()
    if fmt == "celeba":
        reader = CelebA(root=tmp_path, resolution=16)
        idx = _source_index(res, reader)
        for name in ("Eyeglasses", "Smiling", "Male", "Young"):
            assert torch.equal(reader.labels()[name], want[name][idx]), name
    elif fmt == "utkface":
        reader = UTKFace(root=tmp_path, split="all", resolution=16)
        idx = _source_index(res, reader)
        assert torch.equal(reader.labels()["age"], want["age"][idx].round().clamp(0, 116))
        assert torch.equal(reader.labels()["gender"], want["gender"][idx])
        # synthfaces have no race label: the field is written as UTKFace's 4 ("Others"), never left out
        assert "race" not in want and reader.labels()["race"].tolist() == [UTKFACE_NO_RACE] * len(idx) == [4] * 4
        assert not reader.scan_report.notes and all(len(p.name.split("_")) == 4 for p in reader.paths)
    else:
        reader = MultiPIE(root=tmp_path, split="all", resolution=16)
        idx = _source_index(res, reader)
        for name in ("pose", "expression"):
            assert torch.equal(reader.labels()[name], want[name][idx]), name
        assert torch.equal(reader.labels()["illumination"], want["light"][idx])
        assert torch.equal(reader.labels()["subject"], want["identity"][idx] + 1)
    assert reader.load([0])["image"].shape == (1, 3, 16, 16)
    assert not math.isnan(float(reader.load([0])["image"].mean()))
