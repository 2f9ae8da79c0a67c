"""Safe image handling: containment, size limits before decoding, clear reasons."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from mmalign.io.images import (
    RecordImageChecker,
    check_image,
    image_hash,
    load_image,
    resolve_image,
)
from mmalign.records import PreferencePair, RecordError, Sample, Turn


def test_resolve_image_inside_root(tmp_path, make_png):
    make_png(tmp_path / "img" / "a.png")
    assert resolve_image(tmp_path, "img/a.png") == (tmp_path / "img" / "a.png").resolve()
    # A path that does not exist yet still resolves (existence is check_image's job).
    assert resolve_image(tmp_path, "img/nope.png").name == "nope.png"


@pytest.mark.parametrize("rel, words", [
    ("../x.png", "escapes"),
    ("img/../../x.png", "escapes"),
    ("img\\..\\..\\x.png", "escapes"),
    ("/abs/x.png", "absolute"),
    ("C:\\x.png", "absolute"),
    ("", "non-empty"),
])
def test_resolve_image_refuses_escapes(tmp_path, rel, words):
    with pytest.raises(RecordError) as e:
        resolve_image(tmp_path, rel, field="images[1]")
    assert words in e.value.reason
    assert e.value.field == "images[1]"


def test_resolve_image_refuses_symlink_out_of_root(tmp_path, make_png):
    outside = make_png(tmp_path / "outside.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(outside)
    with pytest.raises(RecordError, match="resolves outside the image root"):
        resolve_image(root, "link.png")


def test_check_image_ok_and_load_rgb(tmp_path):
    from PIL import Image

    path = tmp_path / "gray.png"
    Image.new("L", (5, 7), 128).save(path)
    assert check_image(path) == (5, 7)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 7)


def test_check_image_missing(tmp_path):
    with pytest.raises(RecordError, match="not found") as e:
        check_image(tmp_path / "nope.png", field="images[0]")
    assert e.value.field == "images[0]"


def test_check_image_corrupt(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(RecordError, match="corrupt"):
        check_image(path)


def test_check_image_truncated(tmp_path, make_png):
    path = make_png(tmp_path / "t.png", size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(RecordError, match="corrupt"):
        check_image(path)


def test_check_image_over_pixel_limit(tmp_path, make_png):
    path = make_png(tmp_path / "big.png", size=(100, 100))
    with pytest.raises(RecordError, match=r"too large: 100x100 = 10000 pixels > limit 5000"):
        check_image(path, max_pixels=5000)


def test_check_image_over_byte_limit(tmp_path, make_png):
    path = make_png(tmp_path / "a.png")
    with pytest.raises(RecordError, match="bytes > limit 10"):
        check_image(path, max_bytes=10)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is tiny: decoding it
    would either allocate gigabytes or fail; the size check must come first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(60_000, 60_000))
    assert path.stat().st_size < 200
    # "too large", not "corrupt": the header was judged before any decoding was tried.
    with pytest.raises(RecordError, match="too large"):
        check_image(path)


def test_image_hash_is_sha256_of_bytes(tmp_path, make_png):
    path = make_png(tmp_path / "a.png")
    assert image_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_checker_names_the_field(tmp_path, make_png):
    make_png(tmp_path / "ok.png")
    pair = PreferencePair("p", ["ok.png"], [Turn("user", "<image>q")], "a", "b",
                          rejected_images=["missing.png"])
    checker = RecordImageChecker(tmp_path)
    with pytest.raises(RecordError) as e:
        checker.check(pair)
    assert e.value.field == "rejected_images[0]" and "not found" in e.value.reason

    sample = Sample("s", ["ok.png", "../x.png"], [Turn("user", "<image><image>"),
                                                   Turn("assistant", "a")])
    with pytest.raises(RecordError) as e:
        RecordImageChecker(tmp_path, check_files=False).check(sample)
    assert e.value.field == "images[1]" and "escapes" in e.value.reason
