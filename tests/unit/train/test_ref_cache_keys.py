"""Reference-cache keys and the cache file (the model fingerprint is tested with a model in
tests/integration/train/test_reference_cache.py)."""

from __future__ import annotations

import json

import pytest

from mmalign.train.ref_cache import RefLogpCache, entry_key

PROMPT = [{"role": "user", "content": "<image>\nWhat colour is the circle?"}]


def test_every_key_part_changes_the_key():
    base = entry_key(["aa"], PROMPT, "Red.", 512)
    assert base == entry_key(["aa"], [dict(PROMPT[0])], "Red.", 512)  # stable
    changed = [
        entry_key(["ab"], PROMPT, "Red.", 512),  # image bytes
        entry_key(["aa", "aa"], PROMPT, "Red.", 512),  # number of images
        entry_key(["aa"], [{"role": "user", "content": "<image>\nWhat colour?"}], "Red.", 512),
        entry_key(["aa"], PROMPT, "Blue.", 512),  # response
        entry_key(["aa"], PROMPT, "Red.", 256),  # truncation
    ]
    assert len({base, *changed}) == 6


def test_cache_round_trip_and_atomic_rewrite(tmp_path):
    cache = RefLogpCache(tmp_path, "fp1")
    assert len(cache) == 0 and not cache.path.exists()
    cache.update({"k1": (-12.5, 7), "k2": (-3.25, 2)})
    again = RefLogpCache(tmp_path, "fp1")
    assert again.get("k1") == (-12.5, 7) and "k2" in again and "k3" not in again
    again.update({"k3": (-1.0, 1)})
    lines = cache.path.read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == ["k1", "k2", "k3"]
    assert [p.name for p in tmp_path.iterdir()] == ["fp1.jsonl"]  # no temporary left behind
    assert len(RefLogpCache(tmp_path, "fp2")) == 0  # another fingerprint, another file


def test_corrupt_cache_line_is_named(tmp_path):
    (tmp_path / "fp.jsonl").write_text('{"key": "a", "logp": -1.0, "tokens": 3}\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"fp.jsonl: line 2 is not a cache entry"):
        RefLogpCache(tmp_path, "fp")
