"""Round trips between every pair of supported formats are lossless on world data."""

from __future__ import annotations

import itertools
import json

import pytest

from mmalign.io.formats import PAIR_FORMATS, SAMPLE_FORMATS, read_records, write_records
from mmalign.records import PreferencePair, Sample

from .conftest import read_jsonl

SUFFIX = {"llava": ".json", "llava-jsonl": ".jsonl", "sharegpt": ".json", "trl": ".jsonl",
          "povid": ".json", "jsonl": ".jsonl", "hf": "", "parquet": ".parquet"}


@pytest.fixture(scope="module")
def world_samples(small_world):
    samples = read_records(small_world / "corpus.json", "llava")
    samples += read_records(small_world / "clean.json", "llava")[:20]
    # Exercise what the corpus lacks: meta, several images, a system turn.
    s = samples[0]
    samples.append(Sample(id="multi", images=s.images * 2,
                          turns=[s.turns[0].__class__("system", "Be terse.")] + [
                              s.turns[0].__class__("user", "<image><image>\nSame image twice?"),
                              s.turns[1]],
                          category="other", source="test", meta={"lineage": ["a", {"b": 1}]}))
    return samples


@pytest.fixture(scope="module")
def world_pairs(small_world):
    """Preference pairs the way the methods build them: clean answer chosen, defective one
    rejected (the truth file is read here only to build test data)."""
    clean = {r.id: r for r in read_records(small_world / "corpus_clean.json", "llava")}
    bad = {r.id: r for r in read_records(small_world / "corpus.json", "llava")}
    pairs = []
    for t in read_jsonl(small_world / "truth" / "corpus_defects.jsonl"):
        if not t["defects"] or t["defects"][0]["type"] == "near_duplicate":
            continue
        k = 2 * t["defects"][0]["turn"]
        c, b = clean[t["id"]], bad[t["id"]]
        pairs.append(PreferencePair(
            id=t["id"], images=c.images, prompt=b.turns[: k + 1], chosen=c.turns[k + 1].content,
            rejected=b.turns[k + 1].content, origin="world-defect",
            rejected_images=["images/corpus/c000000.png"] if len(pairs) % 3 == 0 else None,
            scores={"chosen": 0.9, "rejected": 0.1}, meta={"category": c.category}))
    assert len(pairs) > 50
    return pairs


def _roundtrip(records, a, b, tmp_path):
    pa, pb = tmp_path / f"a{SUFFIX[a]}", tmp_path / f"b{SUFFIX[b]}"
    write_records(pa, records, a)
    write_records(pb, read_records(pa, a), b)
    back = tmp_path / f"back{SUFFIX[a]}"
    write_records(back, read_records(pb, b), a)
    return read_records(back, a)


@pytest.mark.parametrize("a,b", list(itertools.product(SAMPLE_FORMATS, repeat=2)))
def test_samples_roundtrip_every_pair(a, b, world_samples, tmp_path):
    got = _roundtrip(world_samples, a, b, tmp_path)
    assert [r.to_dict() for r in got] == [r.to_dict() for r in world_samples]


@pytest.mark.parametrize("a,b", list(itertools.product(PAIR_FORMATS, repeat=2)))
def test_pairs_roundtrip_every_pair(a, b, world_pairs, tmp_path):
    got = _roundtrip(world_pairs, a, b, tmp_path)
    assert [json.dumps(r.to_dict()) for r in got] == [json.dumps(r.to_dict())
                                                      for r in world_pairs]


def test_formats_cover_the_issue_list():
    assert set(SAMPLE_FORMATS) >= {"llava", "llava-jsonl", "sharegpt", "trl", "hf", "parquet"}
    assert set(PAIR_FORMATS) >= {"trl", "povid", "hf", "parquet"}
