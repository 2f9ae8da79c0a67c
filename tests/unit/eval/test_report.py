"""The HTML report, its SVG charts and the plain-text table."""

from __future__ import annotations

import base64
import re

import pytest

from mmalign.eval.chair import chair_metrics
from mmalign.eval.mc import build_items, circular_eval
from mmalign.eval.pope import pope_metrics
from mmalign.eval.vqa import vqa_metrics
from mmalign.report.html import format_table, table_columns, write_report
from mmalign.report.plots import bar_chart


def _metrics(yes: str, color: str, letter: str, caption: str) -> dict:
    pope = [{"split": s, "answer": a, "output": yes}
            for s in ("random", "popular", "adversarial") for a in ("yes", "no")]
    vqa = [{"type": "color", "answer": "red", "output": color}]
    mc = [it | {"output": letter} for it in build_items([{
        "id": "q", "image": "i.png", "type": "color", "question": "?",
        "options": ["red", "blue"], "answer": 0}])]
    chair = [{"objects": ["circle"], "output": caption}]
    return {"model": "x", "benches": {"pope": pope_metrics(pope), "vqa": vqa_metrics(vqa),
                                      "mc": circular_eval(mc), "chair": chair_metrics(chair)}}


@pytest.fixture
def results():
    return {"base <sft>": _metrics("Yes", "red", "A", "A circle and a star."),
            "dpo": _metrics("No", "blue", "B", "A circle.")}


def test_bar_chart_has_one_bar_per_model_per_metric():
    svg = bar_chart("T", ["a", "b", "c"], {"m1": [0.1, 0.5, None], "m2": [1.0, 0.0, 0.3]},
                    lower_is_better=["c"])
    bars = re.findall(r'<rect class="bar" data-model="([^"]+)" data-metric="([^"]+)"', svg)
    assert bars == [("m1", "a"), ("m2", "a"), ("m1", "b"), ("m2", "b"), ("m2", "c")]
    assert "c \u2193" in svg and svg.startswith("<svg") and svg.endswith("</svg>")
    with pytest.raises(ValueError, match="2 values for 3 metrics"):
        bar_chart("T", ["a", "b", "c"], {"m": [1, 2]})


def test_report_page_is_self_contained_and_complete(tmp_path, results, make_png):
    img = make_png(tmp_path / "img" / "b0.png", size=(8, 6))
    gallery = [{"image": str(img), "question": "Describe <this>.",
                "answers": {"base <sft>": "A star & a circle.", "dpo": "A circle."},
                "reference": "circle"},
               {"image": str(tmp_path / "missing.png"), "question": "?", "answers": {}}]
    out = write_report(results, tmp_path / "r" / "report.html", gallery=gallery)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # every run (escaped) and every table column of every benchmark
    assert "base &lt;sft&gt;" in page and "dpo" in page
    for bench, m in results["dpo"]["benches"].items():
        assert f'id="bench-{bench}"' in page
        for column in table_columns(bench, m):
            assert f"<th>{column}</th>" in page
    # one bar per run per headline metric: POPE 3 splits, VQA 1, MC 1, CHAIR 3 -> 8 x 2 runs
    bars = re.findall(r'<rect class="bar" data-model="([^"]+)" data-metric="([^"]+)"', page)
    assert len(bars) == 16 and len(set(bars)) == 16
    assert {m for m, _ in bars} == {"base &lt;sft&gt;", "dpo"}
    assert {k for _, k in bars} == {"F1 random", "F1 popular", "F1 adversarial", "accuracy",
                                    "circular accuracy", "CHAIR_i", "CHAIR_s", "recall"}
    assert page.count("<svg") == 4
    # the image is embedded as a decodable PNG, the missing one is reported, not fatal
    data = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(data) == 1 and base64.b64decode(data[0]).startswith(b"\x89PNG")
    assert "image unavailable" in page
    assert "Describe &lt;this&gt;." in page and "A star &amp; a circle." in page
    # nothing is fetched from anywhere
    for needle in ("<script", "<link", 'src="http', "href=", "url("):
        assert needle not in page


def test_format_table_lists_headline_metrics(results):
    text = format_table(results)
    lines = text.splitlines()
    assert lines[0].split()[0] == "run" and len(lines) == 4
    for col in ("pope F1 random", "vqa accuracy", "mc circular accuracy", "chair CHAIR_i"):
        assert col in lines[0]
    # dpo: always "No" -> POPE F1 0; wrong colour; "B" wrong; no hallucination; the circle
    # is named (CHAIR recall 1)
    dpo = lines[3].split()
    assert dpo[0] == "dpo" and dpo[1:] == ["0.000"] * 3 + ["0.000", "0.000", "0.000",
                                                           "0.000", "1.000"]
    # base: always "Yes" -> F1 2/3; VQA right; "A" right in rotation 0 only -> circular 0;
    # CHAIR_i 1/2 (star of circle, star), CHAIR_s 1, recall 1 (the circle)
    assert lines[2].split()[-8:] == ["0.667", "0.667", "0.667", "1.000", "0.000", "0.500",
                                     "1.000", "1.000"]
