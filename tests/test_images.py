import numpy as np
import pytest
from PIL import Image

from realness.images import ImageError, list_images, load_image


def _rgb(a):
    return np.asarray(a, dtype=np.uint8)


def test_modes_become_rgb(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "alpha.png")
    grey16 = Image.fromarray(np.array([[0, 1000], [30000, 65535]], dtype=np.uint16))
    grey16.save(tmp_path / "grey16.png")
    Image.new("P", (4, 4), 3).save(tmp_path / "palette.png")

    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.mode == "RGB" and cmyk.size == (8, 6)
    r, g, b = _rgb(cmyk)[3, 3]
    assert r > 200 and g < 60 and b < 60  # CMYK (0,255,255,0) is red
    alpha = _rgb(load_image(tmp_path / "alpha.png"))
    assert alpha[0, 0].tolist() == [0, 0, 255]
    assert alpha[5, 7].tolist() == [255, 255, 255]  # transparent -> white, not black or red
    g16 = _rgb(load_image(tmp_path / "grey16.png"))[..., 0]
    assert g16[0, 0] == 0 and g16[1, 1] == 255 and 100 < g16[1, 0] < 130  # full 16-bit range kept
    assert load_image(tmp_path / "palette.png").mode == "RGB"


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is not an image at all", "not a readable image"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        load_image(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


def test_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png: corrupt or truncated"):
        load_image(tmp_path / "cut.png")


def test_missing_and_huge(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.png")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr("realness.images.MAX_PIXELS", 200 * 200)
    with pytest.raises(ImageError, match="big.png: too large \\(300x300"):
        load_image(tmp_path / "big.png")


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
