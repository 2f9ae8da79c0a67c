"""Text sets built from scenes: the clean house-style set and the machine-style corpus.

- `clean_samples`: single-turn records per pretraining image in the terse house style: a
  caption, short answers (LLaVA's short-answer instruction) and one multiple-choice question.
  This is what the tiny base model learns to speak.
- `corpus_records`: the machine-generated-style instruction corpus over LLaVA's three
  categories, each record produced clean first, then (at the configured rates) given one
  defect. Both versions are returned: the clean one makes the clean counterpart corpus.
- `corpus_style_samples`: that generator's clean side alone, over chosen scenes (the
  reward models' backbone stage, bench/align2llava.py).
- `question_set_samples`: the clean conversation questions of an image as one text, the
  question reward model's scored text (its backbone's question phase).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmalign.curate.annotations import question_text
from mmalign.records import IMAGE_TOKEN, Sample, Turn
from mmalign.world import defects as defect_registry
from mmalign.world import vocab
from mmalign.world.defects import QAItem
from mmalign.world.questions import EXIST_QUESTIONS, HOUSE, KINDS, MACHINE, kinds_of
from mmalign.world.scene import Scene

# LLaVA-Instruct-158k has 58k conversation, 23k detail and 77k reasoning records over ~80k
# images; per image we draw each category with these probabilities to keep that mix.
CATEGORY_P = {"conversation": 0.72, "detail": 0.29, "reasoning": 0.95}

# Fraction of records carrying each defect (one defect at most per record). Object
# hallucination is the commonest: at 0.14 (world 0.1) the same SFT budget on the defective and
# the clean corpus gave the tiny model the same POPE and CHAIR; at 0.35 the defective arm is
# measurably worse on both (docs/results.md, "Defect gap").
DEFAULT_DEFECT_RATES = {
    "hallucinated_object": 0.35,
    "wrong_attribute": 0.08,
    "wrong_count": 0.06,
    "wrong_relation": 0.05,
    "ungrounded": 0.05,
    "verbosity": 0.05,
    "truncation": 0.04,
    "near_duplicate": 0.03,
}

CLEAN_QA_KINDS = ("exist", "exist", "color", "count", "position", "shape_at", "size",
                  "relation_yn", "relation_what", "total")


@dataclass
class CorpusRecord:
    clean: Sample
    defective: Sample
    defects: list[dict] = field(default_factory=list)  # [] when clean


def to_turns(items: list[QAItem], rng: np.random.Generator) -> list[Turn]:
    turns = []
    for k, it in enumerate(items):
        q = it.question
        if k == 0:  # LLaVA puts the placeholder before or after the first question
            q = f"{IMAGE_TOKEN}\n{q}" if rng.random() < 0.5 else f"{q}\n{IMAGE_TOKEN}"
        turns.append(Turn("user", q))
        turns.append(Turn("assistant", it.answer))
    return turns


def ask(scene: Scene, kind_name: str, rng: np.random.Generator, style: str,
        focus: int | None = None) -> QAItem | None:
    kind = KINDS[kind_name]
    params = kind.ask(scene, rng, focus)
    if params is None:
        return None
    variant = int(rng.integers(kind.n_variants)) if style == MACHINE else 0
    return QAItem(kind.name, params, kind.question(scene, params, style, variant),
                  kind.answer(scene, params, style), variant)


def category_items(scene: Scene, category: str, rng: np.random.Generator) -> list[QAItem]:
    """Clean machine-style QA items for one record of `category`."""
    if category == "detail":
        return [ask(scene, "detail", rng, MACHINE)]
    kinds = kinds_of(category)
    order = [kinds[i].name for i in rng.permutation(len(kinds))]
    if category == "reasoning":
        for name in order:
            item = ask(scene, name, rng, MACHINE)
            if item is not None:
                return [item]
        raise AssertionError("remove_color always applies")  # pragma: no cover
    n_turns = int(rng.choice([2, 3, 4], p=[0.35, 0.4, 0.25]))
    items: list[QAItem] = []
    seen_questions = set()
    for name in order:
        item = ask(scene, name, rng, MACHINE)
        if item is not None and item.question not in seen_questions:
            items.append(item)
            seen_questions.add(item.question)
        if len(items) == n_turns:
            break
    return items


def draw_defect(category: str, rates: dict[str, float], rng: np.random.Generator) -> str | None:
    """One defect type for a record, or None. Types that cannot apply to the category are left
    out and the others are scaled up, so each type's rate holds over the whole corpus."""
    applicable = {k: v for k, v in rates.items()
                  if v > 0 and category in defect_registry.APPLIES_TO[k]}
    if not applicable:
        return None
    coverage = {k: sum(CATEGORY_P[c] for c in defect_registry.APPLIES_TO[k]) / sum(
        CATEGORY_P.values()) for k in applicable}
    probs = {k: v / coverage[k] for k, v in applicable.items()}
    total = sum(probs.values())
    if total > 1:  # rates so high they cannot all hold: keep their proportions
        probs = {k: v / total for k, v in probs.items()}
        total = 1.0
    u = rng.random()
    if u >= total:
        return None
    acc = 0.0
    for k, p in probs.items():
        acc += p
        if u < acc:
            return k
    return None  # pragma: no cover (floating point edge)


def corpus_records(scene: Scene, image: str, rng: np.random.Generator,
                   rates: dict[str, float]) -> list[CorpusRecord]:
    out = []
    for category, p in CATEGORY_P.items():
        if rng.random() >= p:
            continue
        rid = f"{scene.image_id}-{category[:4]}"
        wanted = draw_defect(category, rates, rng)
        items = category_items(scene, category, rng)
        clean_items, bad_items, labels = items, items, []
        # A defect needs a question it can spoil (a count for wrong_count, a relation for
        # wrong_relation): draw fresh questions until it applies, so realised rates match the
        # configured ones. Give up (record stays clean) only if the scene itself rules it out.
        for _ in range(8 if wanted else 0):
            result = defect_registry.DEFECTS[wanted](items, scene, rng, category)
            if result is not None:
                clean_items, bad_items, detail = result
                labels = [{"type": wanted, "detail": detail,
                           "turn": _changed_turn(clean_items, bad_items)}]
                break
            items = category_items(scene, category, rng)
            clean_items = bad_items = items
        turn_seed = int(rng.integers(2**31))
        out.append(CorpusRecord(
            clean=_sample(rid, image, clean_items, category, np.random.default_rng(turn_seed)),
            defective=_sample(rid, image, bad_items, category, np.random.default_rng(turn_seed)),
            defects=labels,
        ))
    return out


def corpus_style_samples(scenes: list[Scene], reps: int, seed: int) -> list[Sample]:
    """The corpus generator's clean side (defect rates all zero), drawn `reps` times over
    `scenes`: corpus-style phrasings ("The small ring in the lower right corner is ...")
    with no defect. Over the pretraining scenes it is the world's stand-in for the
    instruction data a real reward-model backbone (LLaVA-1.5) was tuned on before it judged
    anything: no corpus, annotation or benchmark image, and no truth file. Seeded by `seed`
    alone; ids get "-r<rep>" so the draws keep apart."""
    rng, samples = np.random.default_rng([0, seed]), []
    for rep in range(reps):
        for scene in scenes:
            for r in corpus_records(scene, scene.image, rng, {}):
                r.clean.id = f"{r.clean.id}-r{rep}"
                samples.append(r.clean)
    return samples


def question_set_samples(scenes: list[Scene], reps: int, seed: int) -> list[Sample]:
    """Per scene and rep, the image alone in the user turn and, as the answer, the clean
    conversation questions of `category_items` joined by newlines: the text the question
    reward model scores (`turns` layout: the questions as the model's own turn), so a
    backbone tuned on it predicts what a grounded question set says next and its likelihood
    readout reads what does not fit (docs/results.md, session 20); joined by the question
    RM's own `curate.annotations.question_text`. No answers, and no defect:
    the annotation file's spoilt sets are what it is judged on. Seeded by `seed` alone; ids
    "<image>-qset-r<rep>"."""
    rng, samples = np.random.default_rng([0, seed]), []
    for rep in range(reps):
        for scene in scenes:
            text = question_text(it.question for it in category_items(scene, "conversation",
                                                                      rng))
            samples.append(Sample(id=f"{scene.image_id}-qset-r{rep}", images=[scene.image],
                                  turns=[Turn("user", IMAGE_TOKEN), Turn("assistant", text)],
                                  category="conversation", source="world/machine"))
    return samples


def _changed_turn(clean: list[QAItem], bad: list[QAItem]) -> int:
    """Index of the first QA pair that differs (the appended one for a duplicate)."""
    for k, (a, b) in enumerate(zip(clean, bad, strict=False)):
        if (a.question, a.answer) != (b.question, b.answer):
            return k
    return min(len(clean), len(bad))


def _sample(rid: str, image: str, items: list[QAItem], category: str,
            rng: np.random.Generator) -> Sample:
    return Sample(id=rid, images=[image], turns=to_turns(items, rng), category=category,
                  source="world/machine")


def clean_samples(scene: Scene, image: str, rng: np.random.Generator,
                  n_qa: int = 4) -> list[Sample]:
    """House-style pretraining records for one image, each a single turn: a caption, `n_qa`
    short-answer questions and one multiple-choice question.

    Single turns because in a conversation a later question can be answered from the text of
    earlier turns ("Where is the diamond?" before "Is there a diamond?"), and a tiny model
    learns that shortcut instead of looking: trained on such conversations it answered "No."
    to every POPE question, which comes first, right after the image (docs/LOG.md, probes 4-5).
    """
    from mmalign.eval.mc import mc_prompt
    from mmalign.world.bench import mc_rows

    describe = ask(scene, "detail", rng, HOUSE)
    items: list[tuple[str, str, str]] = [("caption", describe.question, describe.answer)]
    seen = set()
    for name in [CLEAN_QA_KINDS[i] for i in rng.permutation(len(CLEAN_QA_KINDS))]:
        item = ask(scene, name, rng, HOUSE)
        if item is None or item.question in seen:
            continue
        seen.add(item.question)
        items.append((f"q{len(items) - 1}", f"{item.question}\n{vocab.SHORT_ANSWER}",
                      item.answer))
        if len(items) == n_qa + 1:
            break
    # The multiple-choice convention of LLaVA-1.5's training mix: options as "A. ...", the
    # answer a bare letter.
    for row in mc_rows(scene, image, rng, per_image=1):
        items.append(("mc", mc_prompt(row["question"], row["options"]),
                      "ABCDEFGH"[row["answer"]]))
    return [Sample(id=f"{scene.image_id}-{tag}", images=[image],
                   turns=[Turn("user", f"{IMAGE_TOKEN}\n{q}"), Turn("assistant", a)],
                   category="detail" if tag == "caption" else "conversation",
                   source="world/clean")
            for tag, q, a in items]


def grounding_samples(scene: Scene, image: str, rng: np.random.Generator) -> list[Sample]:
    """Records that teach a tiny model to bind a word of the question to the image.

    - every shape present, asked "Is there a {shape} in the image?" (short-answer form), and as
      many absent shapes: balanced, so neither the image alone nor the question alone predicts
      the answer;
    - "Which shapes are in the image?": the answer names all of them (brings the set of shapes
      to the answer position);
    - one existence question answered with the shape echoed ("No, there is no star."): the
      answer has to copy the asked word (brings the question to the answer position).

    A yes/no answer is the product of "which shape was asked" and "which shapes are here";
    trained on the short-answer questions alone the model sat at chance for 1000+ steps, with
    the two helper tasks beside them it left chance within 400 (docs/LOG.md, probe 11).
    """
    present = sorted(scene.shapes())
    absent = [s for s in vocab.SHAPES if s not in present]
    asked = [(s, True) for s in present]
    asked += [(absent[i], False) for i in rng.permutation(len(absent))[:len(present)]]
    items = [(f"g{k}", f"{EXIST_QUESTIONS[0].format(s=s)}\n{vocab.SHORT_ANSWER}",
              "Yes." if here else "No.") for k, (s, here) in enumerate(asked)]
    items.append(("list", "Which shapes are in the image?",
                  ", ".join(present).capitalize() + "."))
    shape = vocab.SHAPES[int(rng.integers(len(vocab.SHAPES)))]
    items.append(("echo", EXIST_QUESTIONS[0].format(s=shape),
                  f"Yes, there is a {shape}." if shape in present
                  else f"No, there is no {shape}."))
    return _short_samples(scene, image, items, "world/grounding")


# Keep an object of its shape's usual colour with this probability in the attribute set's
# colour questions: the kept colours are then uniform given the shape (0.45 -> 0.11 = each
# other colour's share), so the usual colour is no shortcut.
KEEP_USUAL_COLOR = (1 - vocab.USUAL_COLOR_P) / (len(vocab.COLOR_NAMES) - 1) / vocab.USUAL_COLOR_P
# Keep a count question whose answer is "one" with this probability: most shapes are there
# once (13 281 of 16 089 on the default world's pretraining images), and 0.2 about balances
# "one" against the larger counts.
KEEP_SINGLE_COUNT = 0.2
# The attribute set's questions, in the house style of the benchmark's VQA questions; the
# attribute probe (bench/attribute_probe.py) asks the same.
COLOR_QUESTION = "What color is the {shape}?"
COUNT_QUESTION = "How many {plural} are there?"


def attribute_samples(scene: Scene, image: str, rng: np.random.Generator) -> list[Sample]:
    """Records that teach a tiny model to read an object's colour, count, size and position
    off the image, and to bind a colour to a shape (`size_position_items`,
    `conjunction_items`).

    "What color is the {shape}?" for each object whose shape is unique in the scene and "How
    many {shapes} are there?" for each shape present, short and echoed ("The star is red."),
    drawn so that the question does not predict the answer: usual colours are kept at
    KEEP_USUAL_COLOR, "one" at KEEP_SINGLE_COUNT. With the shape's usual colour as a shortcut
    (45% right from the question alone) the base never learnt to read colour: on objects of
    another colour it stayed at chance through every stage; decorrelated, it read them at 0.93
    after 1000 steps (docs/LOG.md, session 12).
    """
    items = []
    for k, o in enumerate(scene.objects):
        if scene.count(shape=o.shape) != 1:
            continue
        if o.color == vocab.USUAL_COLOR[o.shape] and rng.random() >= KEEP_USUAL_COLOR:
            continue
        q = COLOR_QUESTION.format(shape=o.shape)
        items.append((f"c{k}", f"{q}\n{vocab.SHORT_ANSWER}", o.color.capitalize() + "."))
        items.append((f"ce{k}", q, f"The {o.shape} is {o.color}."))
    for shape in sorted(scene.shapes()):
        n = scene.count(shape=shape)
        if n == 1 and rng.random() >= KEEP_SINGLE_COUNT:
            continue
        q = COUNT_QUESTION.format(plural=vocab.PLURALS[shape])
        word = vocab.number_word(n)
        echo = (f"There is one {shape}." if n == 1
                else f"There are {word} {vocab.PLURALS[shape]}.")
        items.append((f"n{shape}", f"{q}\n{vocab.SHORT_ANSWER}", word.capitalize() + "."))
        items.append((f"ne{shape}", q, echo))
    items += size_position_items(scene)
    items += conjunction_items(scene, rng)
    return _short_samples(scene, image, items, "world/attributes")


SIZE_QUESTION = "Is the {shape} large or small?"
POSITION_QUESTION = "Where is the {shape}?"


def size_position_items(scene: Scene) -> list[tuple[str, str, str]]:
    """"Is the {shape} large or small?" and "Where is the {shape}?" for each object whose shape
    is unique in the scene, short ("Large.", "Top left.") and echoed ("The star is large.",
    "The star is at the top left."). Sizes and cells are uniform in the world, so no shortcut
    needs breaking, yet no earlier set made the base read them (VQA size 0.53 on two options,
    position 0.13 on nine), and a third of the corpus's wrong-attribute defects are sizes.
    """
    items = []
    for k, o in enumerate(scene.objects):
        if scene.count(shape=o.shape) != 1:
            continue
        where = vocab.CLEAN_POSITION[o.cell]
        for tag, q, short, echo in (
                ("s", SIZE_QUESTION, o.size, f"The {o.shape} is {o.size}."),
                ("p", POSITION_QUESTION, where, f"The {o.shape} is at the {where}.")):
            q = q.format(shape=o.shape)
            items.append((f"{tag}{k}", f"{q}\n{vocab.SHORT_ANSWER}", short.capitalize() + "."))
            items.append((f"{tag}e{k}", q, echo))
    return items


CONJUNCTION_QUESTION = "Is there a {color} {shape} in the image?"


def conjunction_items(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """"Is there a {color} {shape} in the image?" for objects of the scene (yes) and as many
    shapes of the scene in a colour none of them wears (no), short and echoed ("No, there is no
    red star."). The colour-question set teaches reading a named shape's colour; an answer or a
    caption states "a red star", where the colour comes first and has to be checked against
    the shape that follows it: the reverse binding, which this set asks for. Yes-colours are
    thinned like the colour questions' (usual colour kept at KEEP_USUAL_COLOR); a "no" pairs
    a shape of the image with a colour another of its shapes wears, so neither the shape's nor
    the colour's presence answers the question (a scene with one colour is not asked).
    """
    asked: list[tuple[str, str, bool]] = []
    for o in scene.objects:
        if o.color == vocab.USUAL_COLOR[o.shape] and rng.random() >= KEEP_USUAL_COLOR:
            continue
        if (o.color, o.shape, True) not in asked:
            asked.append((o.color, o.shape, True))
    # "no": a shape of the image in a colour it does not wear but another shape does, so
    # neither "is red anywhere?" nor "is the star here?" answers the question.
    options = sorted({(c, shape) for shape in scene.shapes() for c in scene.colors()
                      if not scene.count(shape=shape, color=c)})
    n = min(len(asked), len(options))  # as many of each
    asked = [asked[int(i)] for i in sorted(rng.permutation(len(asked))[:n])]
    asked += [(*options[int(i)], False) for i in rng.permutation(len(options))[:n]]
    items = []
    for k, (color, shape, here) in enumerate(asked):
        q = CONJUNCTION_QUESTION.format(color=color, shape=shape)
        items.append((f"j{k}", f"{q}\n{vocab.SHORT_ANSWER}", "Yes." if here else "No."))
        items.append((f"je{k}", q, f"Yes, there is a {color} {shape}." if here
                      else f"No, there is no {color} {shape}."))
    return items


def _short_samples(scene: Scene, image: str, items: list[tuple[str, str, str]],
                   source: str) -> list[Sample]:
    return [Sample(id=f"{scene.image_id}-{tag}", images=[image],
                   turns=[Turn("user", f"{IMAGE_TOKEN}\n{q}"), Turn("assistant", a)],
                   category="conversation", source=source)
            for tag, q, a in items]
