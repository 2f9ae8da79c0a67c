"""The lexicon: packaged vocabulary, reading English, fitting on a corpus, save/load."""

from __future__ import annotations

import json

import pytest

from mmalign.pairs.lexicon import Lexicon, LexiconError, analyse, fit_lexicon
from mmalign.records import Sample, Turn


def sample(sid: str, image: str, *answers: str) -> Sample:
    turns = []
    for k, a in enumerate(answers):
        turns += [Turn("user", ("<image>\n" if k == 0 else "") + f"Question {k}?"),
                  Turn("assistant", a)]
    return Sample(sid, [image], turns, category="detail")


@pytest.fixture(scope="module")
def en() -> Lexicon:
    return Lexicon.default()


def test_packaged_lexicon_covers_coco_words(en):
    # A few COCO classes with irregular or multi-word forms, and every attribute family.
    assert en.objects["person"].plural == "people"
    assert en.objects["knife"].plural == "knives"
    assert en.objects["traffic light"].group == "outdoor"
    assert en.forms[("wine", "glasses")] == ("wine glass", True)
    assert {"red", "blue", "white"} <= set(en.colors)
    assert en.sizes["small"] == "large" and en.numbers["three"] == 3
    assert en.relations["to the left of"] == "to the right of"
    assert en.positions["upper"] == "lower"
    assert not en.cooccurrence and not en.learned_objects  # nothing learned yet


def test_analyse_finds_objects_denials_and_negated_clauses(en):
    a = analyse("No, there is no dog here. Two cars wait, and a traffic light is red. "
                "There isn't any bus, but zero bikes and not a single cat.", en)
    by_noun = {m.noun: m for m in a.mentions}
    assert set(by_noun) == {"dog", "car", "traffic light", "bus", "bike", "cat"}
    assert by_noun["dog"].denied and by_noun["bus"].denied and by_noun["bike"].denied
    assert by_noun["cat"].denied
    assert not by_noun["car"].denied and by_noun["car"].plural
    assert by_noun["traffic light"].positive
    assert a.text[by_noun["traffic light"].start:by_noun["traffic light"].end] == "traffic light"


def test_colour_that_is_also_an_object(en):
    # "orange" names a colour before a noun (known or not) and the fruit after an article.
    assert [m.noun for m in analyse("An orange cat sits.", en).mentions] == ["cat"]
    assert [m.noun for m in analyse("The orange ring is big.", en).mentions] == []
    assert [m.noun for m in analyse("There is an orange on the plate.", en).mentions] == \
        ["orange", "plate"]


def test_fit_learns_nouns_cooccurrence_and_colours(en):
    corpus = [
        sample("a", "img/1.png", "There is a green hexagon and a red circle.",
               "The hexagon is green."),
        sample("b", "img/1.png", "Two small circles are near the dog."),
        sample("c", "img/2.png", "A large hexagon sits beside a blue circle."),
        sample("d", "img/3.png", "There are three hexagons. No dog is here."),
        sample("e", "img/4.png", "A purple wibble appears once."),
    ]
    lex = fit_lexicon(corpus, en, min_count=2)
    # "hexagon"/"hexagons" and "circle"/"circles" folded onto their singular; "wibble" is
    # seen once only, so it is not learned.
    assert lex.learned_objects == ["circle", "hexagon"]
    assert lex.objects["hexagon"].plural == "hexagons"
    # Images: 1 mentions hexagon, circle, dog; 2 mentions hexagon, circle; 3 hexagon (the
    # dog there is denied, so it does not count as present).
    assert lex.object_images["hexagon"] == 3
    assert lex.object_images["circle"] == 2
    assert lex.object_images["dog"] == 1
    assert lex.cooc("circle", "hexagon") == 2
    assert lex.cooc("dog", "hexagon") == 1 and lex.cooc("dog", "circle") == 1
    # Attributive ("green hexagon") and predicative ("the hexagon is green") both count.
    assert lex.color_of["hexagon"]["green"] == 2
    assert lex.color_of["circle"] == {"red": 1, "blue": 1}
    assert lex.size_of["circle"]["small"] == 1 and lex.size_of["hexagon"]["large"] == 1
    assert lex.fitted == {"records": 5, "images": 4, "answers": 6}
    # The base lexicon is extended, not replaced, and not modified.
    assert "bus" in lex.objects and "hexagon" not in en.objects


def test_fit_threshold_is_respected(en):
    corpus = [sample(str(i), f"img/{i}.png", "A green hexagon.") for i in range(3)]
    assert "hexagon" in fit_lexicon(corpus, en, min_count=3).objects
    assert "hexagon" not in fit_lexicon(corpus, en, min_count=4).objects
    same_image = [sample(str(i), "img/0.png", "A green hexagon.") for i in range(5)]
    assert "hexagon" not in fit_lexicon(same_image, en, min_count=3, min_images=2).objects


def test_save_load_round_trip(en, tmp_path):
    lex = fit_lexicon([sample("a", "i/1.png", "A red hexagon by a blue bus."),
                       sample("b", "i/2.png", "Two green hexagons and a bus.")], en,
                      min_count=2)
    path = tmp_path / "lex.json"
    lex.save(path)
    back = Lexicon.load(path)
    assert back.to_dict() == lex.to_dict()
    assert back.sha256() == lex.sha256()
    assert back.cooc("bus", "hexagon") == 2
    # A different lexicon hashes differently.
    assert back.sha256() != en.sha256()


def test_bad_lexicon_files_name_file_and_field(tmp_path, en):
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    with pytest.raises(LexiconError, match="broken.json"):
        Lexicon.load(bad_json)
    with pytest.raises(LexiconError, match="no such lexicon file"):
        Lexicon.load(tmp_path / "missing.json")
    d = en.to_dict()
    d["objects"]["dog"] = {"plural": 3}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(d))
    with pytest.raises(LexiconError, match=r"wrong.json: field 'objects.dog'"):
        Lexicon.load(wrong)
    d = en.to_dict()
    d["cooccurrence"] = {"dog": 2}
    wrong.write_text(json.dumps(d))
    with pytest.raises(LexiconError, match=r"field 'cooccurrence.dog'"):
        Lexicon.load(wrong)
    d = en.to_dict()
    del d["colors"]
    wrong.write_text(json.dumps(d))
    with pytest.raises(LexiconError, match=r"field 'colors': missing"):
        Lexicon.load(wrong)
