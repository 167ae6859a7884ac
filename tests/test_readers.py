"""Dataset readers against tiny fixture trees written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancore.data.base import DataError
from gancore.data.readers import (
    CELEBA_ATTRIBUTES,
    CFP,
    CelebA,
    Chairs3D,
    Folder,
    MultiPIE,
    UTKFace,
    age_group,
)


def _img(path: Path, size: tuple[int, int] = (12, 12), mode: str = "RGB", value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, np.uint8)
    img = Image.fromarray(arr)
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":  # fully transparent
        img = Image.fromarray(np.dstack([arr, np.zeros(arr.shape[:2], np.uint8)]))
    elif mode == "I;16":
        img = Image.fromarray(np.full((size[1], size[0]), value * 257, np.uint16))
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
    return path


def _truncated(path: Path) -> Path:
    _img(path, (40, 40))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- CelebA --------------------------------------------------------------------------------

ATTR = np.array(
    [[1 if (i * 7 + j * 3) % 5 < 2 else -1 for j in range(40)] for i in range(6)]
)  # 6 images × 40 attributes
PARTITION = [0, 0, 0, 1, 2, 2]


def _celeba(root: Path, *, identities: bool = False) -> Path:
    for i in range(6):
        _img(root / "img_align_celeba" / f"{i + 1:06d}.jpg", (18, 22), value=20 * i)
    lines = ["6", " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{i + 1:06d}.jpg  " + " ".join(f"{v:2d}" for v in ATTR[i]) for i in range(6)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(PARTITION)))
    if identities:
        ids = [50, 7, 50, 9, 7, 3]
        (root / "identity_CelebA.txt").write_text("".join(f"{i + 1:06d}.jpg {ids[i]}\n" for i in range(6)))
    return root


def test_celeba_labels_and_splits(tmp_path):
    root = _celeba(tmp_path)
    train = CelebA(root=root, resolution=8)
    assert len(train) == 3
    lab = train.labels()
    assert list(lab)[:40] == list(CELEBA_ATTRIBUTES)
    assert torch.equal(lab["Eyeglasses"], torch.tensor((ATTR[:3, 15] > 0).astype(int)))
    assert lab["Smiling"].dtype == torch.long
    assert len(CelebA(root=root, split="test")) == 2
    assert len(CelebA(root=root, split="test", val="test")) == 3
    assert len(CelebA(root=root, split="all")) == 6
    assert set(CelebA.provided_labels(train.config)) == set(CELEBA_ATTRIBUTES)


def test_celeba_load_crop_and_attribute(tmp_path):
    root = _celeba(tmp_path)
    src = CelebA(root=root, resolution=8, split="all", attribute="Male")
    out = src.load([5, 0])
    assert out["image"].shape == (2, 3, 8, 8)
    assert torch.equal(out["attribute"], torch.tensor([int(ATTR[5, 20] > 0), int(ATTR[0, 20] > 0)]))
    assert abs(float(out["image"][0].mean()) - (100 / 127.5 - 1)) < 0.02
    with pytest.raises(DataError, match="not a label"):
        CelebA(root=root, attribute="Wings")


def test_celeba_identity_file(tmp_path):
    src = CelebA(root=_celeba(tmp_path, identities=True), split="all")
    assert src.labels()["identity"].tolist() == [3, 1, 3, 2, 1, 0]
    assert "identity" in CelebA.provided_labels(src.config)


def test_celeba_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="data root folder not found") as e:
        CelebA(root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value) and "list_attr_celeba.txt" in str(e.value)
    root = _celeba(tmp_path / "c")
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="list_eval_partition.txt") as e:
        CelebA(root=root)
    assert "expected layout" in str(e.value)
    assert len(CelebA(root=root, split="all")) == 6  # not needed for "all"
    attr = root / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:4] + [lines[4].rsplit(" ", 1)[0]] + lines[5:]))
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:5: expected a file name and 40 values, got 39"):
        CelebA(root=root, split="all")
    attr.write_text("\n".join(lines[:6] + [lines[6].replace("-1", "0", 1)] + lines[7:]))
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:7: value '0'"):
        CelebA(root=root, split="all")
    attr.write_text("\n".join(["7"] + lines[1:]))
    with pytest.raises(DataError, match="line 1 says 7 images but 6"):
        CelebA(root=root, split="all")


def test_celeba_bad_images_are_replaced_and_counted(tmp_path):
    root = _celeba(tmp_path)
    _truncated(root / "img_align_celeba" / "000002.jpg")
    (root / "img_align_celeba" / "000003.jpg").unlink()
    src = CelebA(root=root, split="all", resolution=8)
    out = src.load([1, 2])
    assert out["image"].shape == (2, 3, 8, 8)
    assert torch.equal(out["Male"], src.labels()["Male"][[3, 3]])
    assert dict(src.loader.report.skipped) == {"truncated": 1, "missing": 1}


# -- UTKFace --------------------------------------------------------------------------------

UTK_GOOD = {
    "1_0_0_20161219140623097.jpg.chip.jpg": (1, 0, 0),
    "26_1_2_20170116184028385.jpg.chip.jpg": (26, 1, 2),
    "45_0_3_20170119171834511.jpg.chip.jpg": (45, 0, 3),
    "80_1_4_20170110182418353.jpg.chip.jpg": (80, 1, 4),
    "71_0_1_20170117195409285.jpg.chip.jpg": (71, 0, 1),
    "39_1_20170116174525125.jpg.chip.jpg": (39, 1, -1),
    "61_1_20170109142408075.jpg.chip.jpg": (61, 1, -1),
    "61_1_20170109150557335.jpg.chip.jpg": (61, 1, -1),
}
UTK_BAD = ["readme.jpg", "30_2_0_20170116174525125.jpg.chip.jpg", "abc_1_0_2017.jpg.chip.jpg"]


def _utk(root: Path) -> Path:
    for k, name in enumerate([*UTK_GOOD, *UTK_BAD]):
        _img(root / "UTKFace" / name, value=10 * k)
    (root / "UTKFace" / "notes.txt").write_text("not an image")
    return root


def test_utkface_labels_missing_race_and_skips(tmp_path):
    src = UTKFace(root=_utk(tmp_path), split="all", resolution=8)
    names = [p.name for p in src.paths]
    assert sorted(names) == sorted(UTK_GOOD) and len(src) == 8
    lab = src.labels()
    for i, name in enumerate(names):
        age, gender, race = UTK_GOOD[name]
        assert lab["age"][i] == age and lab["gender"][i] == gender and lab["race"][i] == race
        assert lab["age_group"][i] == age_group(age)
    assert lab["age"].dtype == torch.float32 and lab["age_group"].dtype == torch.long
    assert src.scan_report.notes["race missing (race = -1)"] == 3
    assert src.scan_report.skipped == {"unparseable name": 2, "gender not 0/1": 1}
    assert src.load([0, 7])["image"].shape == (2, 3, 8, 8)


def test_age_groups():
    ages = [0, 5, 6, 10, 11, 15, 16, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71, 116]
    assert [age_group(a) for a in ages] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]


def test_utkface_split_is_deterministic_and_disjoint(tmp_path):
    root = _utk(tmp_path)
    train = UTKFace(root=root, test_fraction=0.5)
    test = UTKFace(root=root, test_fraction=0.5, split="test")
    assert set(train.paths).isdisjoint(test.paths) and len(train) + len(test) == 8
    assert UTKFace(root=root, test_fraction=0.5).paths == train.paths
    with pytest.raises(DataError, match="no usable sample"):
        UTKFace(root=root, test_fraction=0.0, split="test")


def test_utkface_empty_folder(tmp_path):
    with pytest.raises(DataError, match="image files not found") as e:
        UTKFace(root=tmp_path)
    assert "[age]_[gender]_[race]_[date]" in str(e.value)


# -- Multi-PIE ------------------------------------------------------------------------------


def _multipie(root: Path) -> Path:
    for subject in (1, 2, 5):
        for session, rec in ((1, 1), (1, 2), (2, 3)):
            for cam in ("240", "051", "140", "110", "081"):  # 08_1 is elevated
                for light in (7, 0):
                    name = f"{subject:03d}_{session:02d}_{rec:02d}_{cam}_{light:02d}.png"
                    _img(root / f"session{session:02d}/multiview/{subject:03d}/{rec:02d}/{cam[:2]}_{cam[2]}" / name)
    _img(root / "session01" / "junk.png")
    return root


def test_multipie_labels(tmp_path):
    src = MultiPIE(root=_multipie(tmp_path), split="all", resolution=8)
    assert len(src) == 3 * 3 * 4 * 2
    assert src.scan_report.skipped == {"camera not at head height": 18, "unparseable name": 1}
    lab = src.labels()
    i = [p.name for p in src.paths].index("005_02_03_051_07.png")
    assert {k: float(v[i]) for k, v in lab.items()} == {
        "identity": 2, "subject": 5, "pose": 6, "yaw": 0.0, "illumination": 7,
        "session": 1, "recording": 2, "expression": 3,
    }  # fmt: skip
    j = [p.name for p in src.paths].index("001_01_02_240_00.png")
    assert lab["pose"][j] == 0 and lab["yaw"][j] == -90 and lab["expression"][j] == 1
    k = [p.name for p in src.paths].index("002_01_01_110_00.png")
    assert lab["pose"][k] == 12 and lab["yaw"][k] == 90 and lab["identity"][k] == 1
    assert src.label_classes()["pose"] == 13


def test_multipie_pose_subset_filters_and_subject_split(tmp_path):
    root = _multipie(tmp_path)
    src = MultiPIE(root=root, poses=["05_1", "14_0"], expressions=["neutral"], illuminations=[7], train_subjects=2)
    assert sorted(set(src.labels()["pose"].tolist())) == [0, 1]
    assert sorted(set(src.labels()["subject"].tolist())) == [1, 2] and len(src) == 2 * 2
    test = MultiPIE(root=root, poses="drgan9", train_subjects=2, split="test")
    assert set(test.labels()["subject"].tolist()) == {5} and set(test.labels()["identity"].tolist()) == {0}
    assert set(test.labels()["pose"].tolist()) == {4, 5}  # 05_1 and 14_0 among the 9 cameras
    with pytest.raises(ValueError, match="unknown cameras"):
        MultiPIE(root=root, poses=["08_1"])


# -- CFP ------------------------------------------------------------------------------------


def _cfp(root: Path) -> Path:
    images = root / "Data" / "Images"
    f_list, p_list = [], []
    for s in (1, 2, 3):
        for k in (1, 2):
            _img(images / f"{s:03d}" / "frontal" / f"{k:02d}.jpg")
            f_list.append(f"../Data/Images/{s:03d}/frontal/{k:02d}.jpg")
        _img(images / f"{s:03d}" / "profile" / "01.jpg")
        p_list.append(f"../Data/Images/{s:03d}/profile/01.jpg")
    proto = root / "Protocol"
    proto.mkdir()
    (proto / "Pair_list_F.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(f_list)))
    (proto / "Pair_list_P.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(p_list)))
    for setting, same, diff in (("FF", "1,2\n3,4\n", "1,3\n"), ("FP", "1,1\n", "1,2\n5,1\n")):
        for fold in ("01", "02"):
            d = proto / "Split" / setting / fold
            d.mkdir(parents=True)
            (d / "same.txt").write_text(same)
            (d / "diff.txt").write_text(diff)
    return root


def test_cfp_labels_and_protocol(tmp_path):
    src = CFP(root=_cfp(tmp_path), split="all", resolution=8)
    assert len(src) == 9
    lab = src.labels()
    rel = [p.relative_to(tmp_path / "Data" / "Images").as_posix() for p in src.paths]
    assert lab["pose"][rel.index("002/profile/01.jpg")] == 1 and lab["pose"][rel.index("002/frontal/02.jpg")] == 0
    assert lab["identity"][rel.index("003/frontal/01.jpg")] == 2
    proto = src.protocol
    assert proto is not None and len(proto.folds["FF"]) == 2 and proto.folds["FP"][0]["diff"] == [(1, 2), (5, 1)]
    idx, same = src.pairs("FP", 0)
    assert same.tolist() == [1, 0, 0]
    assert [(rel[a], rel[b]) for a, b in idx.tolist()] == [
        ("001/frontal/01.jpg", "001/profile/01.jpg"),
        ("001/frontal/01.jpg", "002/profile/01.jpg"),
        ("003/frontal/01.jpg", "001/profile/01.jpg"),
    ]
    train = CFP(root=tmp_path, train_subjects=2)
    assert set(train.labels()["subject"].tolist()) == {1, 2}
    assert len(train.pairs("FF", 1)[0]) == 3


def test_cfp_malformed_protocol_line(tmp_path):
    root = _cfp(tmp_path)
    (root / "Protocol" / "Split" / "FF" / "02" / "diff.txt").write_text("1,3\n4;5\n")
    src = CFP(root=root, split="all")
    with pytest.raises(DataError, match=r"FF/02/diff.txt:2: expected 'i,j'"):
        src.protocol


# -- 3D chairs ------------------------------------------------------------------------------


def _chairs(root: Path) -> Path:
    for model in ("bbb", "aaa", "ccc"):
        d = root / "rendered_chairs" / model / "renders"
        k = 0
        for p in (20, 30):
            for t in (0, 11, 23, 34):
                k += 1
                _img(d / f"image_{k:03d}_p{p:03d}_t{t:03d}_r096.png", mode="RGBA")
        _img(d / "thumbnail.png")
    return root


def test_chairs_labels(tmp_path):
    src = Chairs3D(root=_chairs(tmp_path), split="all", resolution=8)
    assert len(src) == 24 and src.scan_report.skipped == {"unparseable name": 3}
    lab = src.labels()
    i = src.paths.index(tmp_path / "rendered_chairs/bbb/renders/image_007_p030_t023_r096.png")
    assert (lab["identity"][i], lab["view"][i], lab["elevation"][i], lab["azimuth"][i]) == (1, 2, 1, 23.0)
    out = src.load([i])
    assert torch.allclose(out["image"], torch.ones_like(out["image"]), atol=1e-6)  # transparent on white
    one = Chairs3D(root=tmp_path, elevations=[20], train_models=2)
    assert len(one) == 8 and set(one.labels()["elevation"].tolist()) == {0}
    test = Chairs3D(root=tmp_path, train_models=2, split="test")
    assert set(test.labels()["identity"].tolist()) == {0} and test.models == ["ccc"]


def test_chairs_missing(tmp_path):
    with pytest.raises(DataError, match="renders not found") as e:
        Chairs3D(root=tmp_path)
    assert "image_001_p020_t000_r096.png" in str(e.value)


# -- generic folder -------------------------------------------------------------------------


def _folder(root: Path) -> Path:
    _img(root / "images" / "a.png", mode="L")
    _img(root / "images" / "b.png", mode="RGBA")
    _img(root / "images" / "c.png", mode="I;16")
    _img(root / "images" / "d.jpg")
    _truncated(root / "images" / "e.jpg")
    (root / "labels.csv").write_text(
        "path,smile,age,hair,split\n"
        "images/a.png,1,23.5,brown,train\n"
        "images/b.png,0,40,black,train\n"
        "images/c.png,1,,blond,test\n"
        "images/d.jpg,,7,brown,train\n"
        "images/e.jpg,0,19,black,train\n"
    )
    return root


def test_folder_column_types(tmp_path):
    src = Folder(root=_folder(tmp_path), split="all", resolution=8)
    lab = src.labels()
    assert lab["smile"].tolist() == [1, 0, 1, -1, 0] and lab["smile"].dtype == torch.long
    assert lab["age"].dtype == torch.float32 and torch.isnan(lab["age"][2]) and lab["age"][0] == 23.5
    assert lab["hair"].tolist() == [2, 0, 1, 2, 0] and src.categories["hair"] == ["black", "blond", "brown"]
    assert src.column_types == {"smile": "class", "age": "float", "hair": "category"}
    assert Folder.provided_labels(src.config) == ("smile", "age", "hair")
    assert len(Folder(root=tmp_path)) == 4 and len(Folder(root=tmp_path, split="test")) == 1


def test_folder_odd_images_are_converted_and_bad_replaced(tmp_path):
    src = Folder(root=_folder(tmp_path), split="all", resolution=8)
    out = src.load([0, 1, 2, 3, 4])
    assert out["image"].shape == (5, 3, 8, 8)
    assert out["hair"].tolist() == [2, 0, 1, 2, 2]  # e.jpg (truncated) → next good: wraps to a.png
    r = src.loader.report
    assert r.converted["grayscale"] == 2 and r.converted["alpha"] == 1 and r.converted["16-bit"] == 1
    assert r.skipped == {"truncated": 1} and r.examples["truncated"] == [str(tmp_path / "images" / "e.jpg")]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="label CSV not found") as e:
        Folder(root=tmp_path)
    assert str(tmp_path / "labels.csv") in str(e.value) and "expected layout" in str(e.value)
    (tmp_path / "labels.csv").write_text("path,x\na.png,1\nb.png,2,3\n")
    with pytest.raises(DataError, match=r"labels.csv:3: 3 cells but the header has 2"):
        Folder(root=tmp_path)
    (tmp_path / "labels.csv").write_text("file,x\na.png,1\n")
    with pytest.raises(DataError, match=r"labels.csv:1: no 'path' column"):
        Folder(root=tmp_path)
    (tmp_path / "labels.csv").write_text("path,x,split\na.png,1,val\n")
    with pytest.raises(DataError, match=r"labels.csv:2: 'split' must be 'train' or 'test'"):
        Folder(root=tmp_path)


def test_unknown_config_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="extra"):
        UTKFace(root=tmp_path, colour="red")
