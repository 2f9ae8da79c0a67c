"""bench/attribute_probe.py: the colour/count probe's items agree with the scenes, and a model
is scored on every item."""

from __future__ import annotations

from mmalign.experiments import bench_module

probe = bench_module("attribute_probe")


def test_items_are_true_to_the_scenes_and_every_one_is_scored(tiny_world, tiny_model):
    from mmalign.world import vocab
    from mmalign.world.scene import read_scene_file

    scenes = {s.image: s for s in read_scene_file(tiny_world / "scenes.jsonl")
              if s.split == "bench"}
    items = probe.probe_items(tiny_world, images=len(scenes))
    assert {kind for kind, *_ in items} <= {"usual", "unusual", "count"}
    for kind, image, question, answer in items:
        scene = scenes[image]
        if kind == "count":
            plural = question.removeprefix("How many ").removesuffix(" are there?")
            shape = next(s for s in vocab.SHAPES if vocab.PLURALS[s] == plural)
            assert answer == vocab.number_word(scene.count(shape=shape)) != "zero"
        else:
            shape = question.removeprefix("What color is the ").removesuffix("?")
            (obj,) = [o for o in scene.objects if o.shape == shape]  # unique in its scene
            assert answer == obj.color
            assert (kind == "usual") == (obj.color == vocab.USUAL_COLOR[shape])
    assert sum(k == "count" for k, *_ in items) == sum(len(s.shapes()) for s in scenes.values())
    acc = probe.accuracies(str(tiny_model), tiny_world, items, batch_size=8)
    for kind, (accuracy, n) in acc.items():
        expected = (sum(k == "count" and a != "one" for k, _, _, a in items) if kind == "count>1"
                    else sum(k == kind for k, *_ in items))
        assert n == expected and 0.0 <= accuracy <= 1.0


def test_binding_pairs_differ_only_in_a_false_colour_and_every_one_is_scored(tiny_world,
                                                                            tiny_model):
    from mmalign.world import vocab
    from mmalign.world.scene import read_scene_file

    scenes = {s.image: s for s in read_scene_file(tiny_world / "scenes.jsonl")
              if s.split == "bench"}
    items = probe.binding_items(tiny_world, images=3)
    assert items
    for column, image, _, true, false in items:
        scene = scenes[image]
        (diff,) = [(t, f) for t, f in zip(true.split(), false.split(), strict=True) if t != f]
        shape = next(s for s in vocab.SHAPES if f" {s} " in f" {true} ")
        (obj,) = [o for o in scene.objects if o.shape == shape]
        assert diff[0].rstrip(".") == obj.color != diff[1].rstrip(".")
        assert diff[1].rstrip(".") in vocab.COLOR_NAMES
        usual = obj.color == vocab.USUAL_COLOR[shape]
        assert column == f"{'after' if true.startswith('The ') else 'before'} " \
                         f"{'usual' if usual else 'unusual'}"
    acc = probe.binding(str(tiny_model), tiny_world, items)
    assert sum(n for _, n in acc.values()) == len(items)
    assert all(0.0 <= a <= 1.0 for a, _ in acc.values())
