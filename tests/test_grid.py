"""gancore.grid: the PNG grids of sample images, metrics' figures and data previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancore.grid import grid_image, save_grid


def _tiles(n: int, value: float, size: int = 8) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def test_plain_grid_layout_and_pixels(tmp_path: Path) -> None:
    rows = [("a", _tiles(4, -1.0)), ("b", torch.linspace(-1, 1, 2).view(2, 1, 1, 1).expand(2, 1, 8, 8))]
    path = save_grid(rows, tmp_path / "sub" / "g.png")
    assert path == tmp_path / "sub" / "g.png" and [p.name for p in path.parent.iterdir()] == ["g.png"]
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * 9 + 1, 4 * 9 + 1, 3)  # 1 px white between and around tiles
    assert (img[0] == 255).all() and (img[:, 0] == 255).all()
    assert (img[1:9, 1:9] == 0).all() and (img[1:9, 28:36] == 0).all()  # row a: black
    assert (img[10:18, 1:9] == 0).all() and (img[10:18, 10:18] == 255).all()  # row b: grey → -1 and +1
    assert (img[10:18, 19:] == 255).all()  # the short row is left blank
    assert save_grid([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    titled = grid_image(rows, title="a note much longer than this small grid is wide, cut at its edge")
    assert titled.width == img.shape[1] and titled.height > img.shape[0]  # a line above; never wider
    assert (np.asarray(titled)[-img.shape[0]:] == img).all()  # the grid itself is unchanged below it


def test_labels_captions_and_title_add_room_and_ink() -> None:
    rows = [("first", _tiles(3, 0.0, 16)), ("second", _tiles(2, 0.0, 16), ["x=0", "x=1"])]
    plain = grid_image(rows)
    assert plain.height > grid_image([rows[0], rows[1][:2]]).height  # the caption strip
    labelled = grid_image(rows, labels=True, title="a title")
    assert labelled.width > plain.width and labelled.height > plain.height
    a = np.asarray(labelled)
    left = labelled.width - plain.width  # the label column
    dark = (a < 128).all(-1)
    assert dark[:, :left].any()  # label text
    title_h = labelled.height - plain.height  # the title line (captions are drawn in both)
    assert dark[:title_h].any() and not dark[title_h + 1: title_h + 17, left:].any()  # title; then tiles
    assert dark[-title_h:, left:].any()  # captions under the second row's tiles
    # the text leaves the tiles alone: the first row's mid-grey tiles are still mid-grey
    assert (a[title_h + 1: title_h + 17, left + 1: left + 17] == 128).all()


def test_pack_puts_short_rows_on_shared_lines() -> None:
    rows = [("wide", _tiles(8, 0.0, 16))] + [(f"s{i}", _tiles(2, 0.0, 16), ["0", "1"]) for i in range(4)]
    loose = grid_image(rows, labels=True)
    packed = grid_image(rows, labels=True, pack=True)
    assert packed.width == loose.width
    # the wide line (17 px) stays; the four captioned short rows take two lines instead of four
    assert loose.height - 18 == 2 * (packed.height - 18)
    dark = (np.asarray(packed)[18:] < 100).all(-1)
    assert dark[:, packed.width // 2:].any()  # a label in the right half: a row sits beside another


@pytest.mark.parametrize("rows,match", [
    ([("a", torch.zeros(2, 4, 8, 8))], r"row 0 \('a'\): images must be \[N, 1 or 3, H, W\]"),
    ([("a", torch.zeros(2, 3, 8, 8), ["only one"])], r"row 0 \('a'\) has 2 images but 1 captions"),
    ([("a",)], r"row 0 must be \(label, images\)"),
    ([], "no rows"),
])
def test_bad_rows_are_refused(rows, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        grid_image(rows)
