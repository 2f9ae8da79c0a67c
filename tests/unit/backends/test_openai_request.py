"""Pieces of the `openai` backend that need no server: Retry-After, request bodies, cache keys."""

from __future__ import annotations

import base64
import email.utils

import pytest

from mmalign.backends.base import GenRequest
from mmalign.backends.cache import DiskCache, cache_key
from mmalign.backends.openai import OpenAIGenerator, image_data_url, retry_after_seconds
from mmalign.records import Turn


def test_retry_after_forms():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.25") == 0.25
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds(date, now=1_000_000) == pytest.approx(30.0)
    assert retry_after_seconds(date, now=2_000_000) == 0.0  # in the past: go now


def test_body_puts_each_image_where_its_placeholder_is(make_png, tmp_path):
    a = make_png(tmp_path / "a.png", color=(255, 0, 0))
    b = make_png(tmp_path / "b.png", color=(0, 0, 255))
    gen = OpenAIGenerator("m", "http://127.0.0.1:9/v1")
    req = GenRequest(images=[a, b], messages=[
        Turn("system", "Be brief."),
        Turn("user", "Left <image> and right <image>\nSame colour?")],
        max_new_tokens=7, temperature=0.5, top_p=0.8, seed=3)
    body = gen._body(req, [image_data_url(a), image_data_url(b)])
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert parts[0]["text"] == "Left " and parts[4]["text"] == "Same colour?"
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == a.read_bytes()
    assert parts[3]["image_url"]["url"] != url
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        7, 0.5, 0.8, 3)
    with pytest.raises(ValueError, match="placeholders"):
        gen._body(GenRequest(images=[a], messages=[Turn("user", "no placeholder")]),
                  [image_data_url(a)])


def test_non_web_formats_are_sent_as_png(tmp_path):
    from PIL import Image

    p = tmp_path / "x.bmp"
    Image.new("RGB", (3, 3), (1, 2, 3)).save(p, format="BMP")
    assert image_data_url(p).startswith("data:image/png;base64,")


def test_cache_key_separates_what_changes_the_answer(tmp_path):
    base = {"model": "m", "prompt_hash": "p", "images": ["h"], "params": {"t": 0},
            "messages": [["user", "q"]], "tags": {"sample_index": 0, "repeat": 0}}
    k = cache_key(base)
    assert cache_key(dict(reversed(list(base.items())))) == k  # key order does not matter
    for change in ({"model": "m2"}, {"prompt_hash": "p2"}, {"images": ["h2"]},
                   {"params": {"t": 1}}, {"messages": [["user", "q2"]]},
                   {"tags": {"sample_index": 1, "repeat": 0}}):
        assert cache_key(base | change) != k
    cache = DiskCache(tmp_path / "c.sqlite")
    cache.put(k, "answer")
    cache.close()
    again = DiskCache(tmp_path / "c.sqlite")  # survives reopening (a new process)
    assert again.get(k) == "answer" and again.get(cache_key(base | {"model": "x"})) is None
    assert len(again) == 1
