"""Typed content parts <-> `<image>` placeholder strings must be exactly reversible."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmalign.io.messages import from_parts, to_parts
from mmalign.records import IMAGE_TOKEN, RecordError


@pytest.mark.parametrize("text, parts", [
    ("Hello", [{"type": "text", "text": "Hello"}]),
    ("<image>\nWhat is this?", [{"type": "image"}, {"type": "text", "text": "\nWhat is this?"}]),
    ("<image><image>", [{"type": "image"}, {"type": "image"}]),
    ("a <image> b\n", [{"type": "text", "text": "a "}, {"type": "image"},
                       {"type": "text", "text": " b\n"}]),
    ("", []),
])
def test_to_parts_examples(text, parts):
    assert to_parts(text) == parts
    assert from_parts(parts, "content") == (text, [])


# Text drawn from a small alphabet that includes pieces of the token, so that
# near-misses like "<imag" and "image>" get exercised too.
_pieces = st.lists(st.sampled_from([IMAGE_TOKEN, "<", "image", ">", "\n", " ", "x", "é", "漢"]))


@given(_pieces)
def test_round_trip_is_exact(pieces):
    text = "".join(pieces)
    back, _ = from_parts(to_parts(text), "content")
    assert back == text


def test_from_parts_accepts_openai_and_hf_image_parts():
    parts = [
        {"type": "image_url", "image_url": {"url": "imgs/a.png"}},
        {"type": "text", "text": "and"},
        {"type": "image", "image": "imgs/b.png"},
        {"type": "image", "text": None},  # how a parquet struct column returns an image part
    ]
    assert from_parts(parts, "content") == ("<image>and<image><image>",
                                            ["imgs/a.png", "imgs/b.png"])


@pytest.mark.parametrize("parts, field", [
    ([{"type": "audio"}], "m[0].type"),
    ([{"type": "text"}], "m[0].text"),
    (["plain"], "m[0]"),
    (42, "m"),
])
def test_from_parts_errors_name_the_part(parts, field):
    with pytest.raises(RecordError) as e:
        from_parts(parts, "m")
    assert e.value.field == field
