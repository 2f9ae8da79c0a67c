"""Align2LLaVA in miniature (DESIGN 6.1): does a reward-model-curated 9% of the world's
machine-generated corpus train a model at least as good as the whole corpus?

    .venv/bin/python bench/align2llava.py recipes/align2llava.yaml [key=value ...]

Steps, in order (settings: the `Align2LLaVAExperiment` fields below):
 0. The reward models' backbone (`rm_backbone_*`): `base` tuned on the attribute set
    (rm_backbone_attribute_steps), then on corpus-style clean records over the pretraining
    images (rm_backbone_steps); either phase may be 0 steps. The question RM's own backbone
    is that one tuned further on question sets (rm_backbone_question_steps; 0: none).
 1. Reward models. The question RM and the answer RM are trained from the backbone on the
    world's oracle annotations (annotations/questions.jsonl, annotations/answers.jsonl) with the
    pairwise loss (`curate.reward_train.train_reward`); each one's held-out pairwise accuracy
    (on real annotation pairs of held-out images) is recorded. Target: >= 0.80.
 2. Scoring. Every record of corpus.json gets both RMs' scores (`curate.score.score_corpus`).
 3. Selection. The cascade per category (`curate.select.run_select`): top `alpha` of images by
    question score, then top `beta` of their instructions by answer score; 0.3 / 0.3 keeps ~9%.
 4. Measurement. The defect rate (share of records with at least one defect label) of the
    corpus and of the curated slice, read from the world's truth/corpus_defects.jsonl. Only
    this measurement reads the truth file; curation never does. Target: curated <= corpus / 3.
 5. Training sets (OUT/data/):
      full             corpus.json, every record;
      curated          the cascade's selection;
      random           as many records as `curated`, with the same count per category, drawn
                       at random (seeded by the training seed, so the spread over seeds
                       includes the draw);
      curated_rewrite  `curated` with `rewrite_limit` of its records (evenly spaced through the
                       selection; null: all) rewritten by `curate.rewrite.run_rewrite`: the base
                       VLM itself rewrites each answer and reviews original vs rewrite, and the
                       scene guard (exact, against scenes.jsonl) rejects rewrites that change a
                       fact. Rewritten / kept / rejected counts and the answers' perplexity
                       before and after (under the base model) go to curation.json;
      matched          as `random`, but with `curated`'s composition: as many records of each
                       (category, question template) as `curated` has, a template being the
                       first question with the world's vocabulary masked (`question_template`).
                       curated - matched is what the RMs' choice within a kind of record buys;
                       matched - random is what the kinds they keep buy;
      oracle           as `random`, but drawn only from records with no defect label in the
                       truth file: the upper bound of any defect filter.
 6. SFT. `base` is fine-tuned on each set (plus the `sft_mix` files, if any, the same for
    every set) for `steps` steps of `batch_size` records: the same number of samples seen
    for every set. Without a mix the 9% sets are seen for several epochs (steps *
    batch_size / their size) while the full corpus is seen for a fraction of one; with a mix
    the 9% set is a small share of every batch, as the curated 14k is of the paper's 665k
    mix (a smaller set, not a smaller budget). The share sets how much any set's quality can
    show: with `clean.json:8000` the oracle-clean 9% scored level with a random 9%
    (docs/results.md).
 7. Evaluation. `base` and every run on POPE (F1 per split), VQA, mc (CircularEval accuracy)
    and CHAIR, the first `eval_limit` benchmark images.

Outputs under `out`: rm_question/, rm_answer/, score/, select/, rewrite/, data/,
<variant>-s<seed>/ (SFT output and its eval), eval<limit>-base/, curation.json (RM accuracies,
selection counts, defect rates and their ratio, rewrite counts and perplexity, each RM against
the true order, the answer RM's backbone as an untrained judge, and the question templates of
the corpus and the curated set), and align2llava.md / .json (the table: mean with min-max over
seeds, then curated - full, curated - random, curated - matched, matched - random,
curated_rewrite - curated and oracle - random). Every step resumes or is
skipped when its output exists, so rerunning the command after an interruption only does what
is missing; a folder made with other settings is refused rather than mixed in (use another
`out`). A training arm's settings include its training files' content hashes, so an arm copied
from another `out` is reused only when it trained on the same data (for arms recorded since
the hashes; an older record takes the hashes of the files there when it is next read).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from mmalign.config import RecipeError, to_dataclass
from mmalign.experiments import (
    Column,
    check_settings,
    ensure_world,
    evaluate_model,
    field_defaults,
    load_settings,
    mix_files,
    recipe_main,
    repo_path,
    show_row,
    summarise,
    write_results,
)

VARIANTS = ("full", "curated", "random", "matched", "curated_rewrite", "oracle")
# Difference rows of the table: (variant, reference) -> "variant - reference".
DIFFS = (("curated", "full"), ("curated", "random"),
         ("curated", "matched"), ("matched", "random"),  # choice within kinds; the kinds kept
         ("curated_rewrite", "curated"),
         ("oracle", "random"))  # the last: what a perfect defect filter buys over chance
RM_KINDS = ("question", "answer")
# RewardTrainConfig fields the experiment sets from its own (world, base, out): not overridable.
EXPERIMENT_OWNED_RM_FIELDS = {"model", "annotations", "output_dir", "kind", "image_root",
                              "line_reader"}
LINE_READERS = ("backbone", "rm_backbone", "base")
log = logging.getLogger("align2llava")


@dataclass
class Align2LLaVAExperiment:
    """Settings of the miniature Align2LLaVA experiment (recipes/align2llava.yaml). Relative
    paths are taken from the current folder, then from the repository root."""

    world: str = "runs/base/world"  # world folder; made (WorldConfig seed `world_seed`) if absent
    world_seed: int = 0  # only used to make a missing world (0: the tiny-base's world)
    base: str = "checkpoints/tiny-base"  # the backbone of both RMs and the start of every SFT
    out: str = "runs/align2llava"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Training sets to train and evaluate (null: all of VARIANTS). A subset lets the arms run
    # in separate processes; a last run with all of them prints the whole table.
    only: list[str] | None = None

    # --- reward models (RewardTrainConfig fields of the same meaning), both trained alike
    rm_steps: int = 300
    rm_batch_size: int = 8  # pairs per step (2x rows per forward); groups with rm_group_pairs
    rm_group_pairs: bool = False  # batch by annotation group, each text encoded once
    rm_lr: float = 3e-4
    rm_lora: bool = False  # false: full fine-tuning
    rm_lora_r: int = 16
    rm_freeze_vision: bool = False
    rm_eval_fraction: float = 0.1  # share of annotation images held out for the accuracy
    rm_augment_rate: float = 0.25  # corruption pairs per candidate (paper)
    rm_max_length: int | None = None
    rm_layout: str = "user"  # user (the paper's) | turns: the scored text after the image
    rm_seed: int = 0
    # Per kind, RewardTrainConfig fields that replace the shared ones above for that kind, e.g.
    # {answer: {readout: likelihood, max_steps: 3000, per_device_train_batch_size: 256}}.
    rm_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Who reads the lines of an RM whose likelihood_features include a line feature
    # (`redundancy`, `answer_redundancy`)
    # (models/reward.py): backbone, the RM's own; rm_backbone, the corpus-style backbone
    # below (OUT/rm_backbone, which answers questions; the question phase's model writes
    # them); base. Saved with the RM (session 24).
    rm_line_reader: str = "backbone"

    # --- the reward models' backbone. The paper's RMs start from LLaVA-1.5, which was tuned
    # on LLaVA-Instruct-style data before it judged any; the tiny base never saw the corpus's
    # phrasings, and what it predicts there cannot tell a wrong attribute from a right one
    # (docs/results.md, sessions 14-17). With rm_backbone_steps > 0, `base` is first
    # fine-tuned that many steps on `world.corpus.corpus_style_samples` over the pretraining
    # images (defect-free; no corpus, annotation or benchmark image; no truth file) and the
    # RMs of `rm_backbone_kinds` start from it. 0: both start from `base`. Every SFT arm
    # still starts from `base`.
    rm_backbone_steps: int = 0
    rm_backbone_kinds: list[str] = field(default_factory=lambda: list(RM_KINDS))
    rm_backbone_reps: int = 4  # draws of the set per pretraining scene
    rm_backbone_seed: int = 100  # the set's draw
    rm_backbone_batch_size: int = 32
    rm_backbone_lr: float = 1e-3
    rm_backbone_train_vision: bool = False
    # Share of the backbone's set that is `world.corpus.attribute_samples` (short colour,
    # count, size, position and colour-shape questions over the same pretraining images): the
    # tiny base reads no size or position, and a third of the wrong attributes are each.
    rm_backbone_attribute_share: float = 0.0
    # Steps of an attribute phase before the corpus-style one: `base` is first tuned on the
    # base's own attribute set (`models.base.scene_records(world, rm_backbone_seed,
    # "attributes")`: colour, count, size, position and colour-shape questions over the
    # pretraining images, the opt-in stage 4 of `models.base`), then on the corpus style from
    # there. Session 16's best answer RM started from such a model (b13 sizepos2); a share
    # mixed into one phase (run a2m) did not teach the attributes. Same batch, lr and tower.
    # 1600 attribute + 600 (run a2f) or + 1800 (run a2g) corpus-style steps: a better answer RM
    # with 1800 (mean of three splits 0.816 against 0.796, session 20). With the question
    # phase below on it too, the cascade's ratio is 0.272-0.287 against 0.354 (session 22),
    # so the recipe has 1600 (docs/results.md, sessions 18-22). 0 here: run a2l's backbone.
    rm_backbone_attribute_steps: int = 0
    # Steps of a question phase for the question RM alone: the backbone above tuned further
    # on `world.corpus.question_set_samples` (the image, then its clean conversation
    # questions joined by newlines: the question RM's own `turns` text) over the pretraining
    # images, OUT/rm_backbone_questions/. What a likelihood readout reads is then what the
    # model expects a question set to say (session 20: held out 0.749 over three splits
    # against the last-token RM's 0.726). The answer RM does not start from it: the same
    # backbone gave an answer RM of 0.630. Same batch, lr and tower as the phases above.
    rm_backbone_question_steps: int = 0
    rm_backbone_question_reps: int = 2  # question sets per pretraining scene
    rm_backbone_question_seed: int = 200  # their draw

    # --- scoring the corpus
    score_batch_size: int = 64  # records per step (and resume unit)
    rm_score_batch_size: int = 32  # inputs per reward-model forward

    # --- selection (the cascade)
    alpha: float = 0.3  # stage 1: share of images kept per category (question RM)
    beta: float = 0.3  # stage 2: share of their instructions kept (answer RM)

    # --- inner-LLM rewrite (the curated_rewrite variant)
    rewrite: bool = True  # false: no curated_rewrite variant
    rewrite_limit: int | None = None  # records rewritten, evenly spaced (None: all)
    rewrite_max_new_tokens: int = 96
    rewrite_batch_size: int = 32
    rewrite_include_image: bool = False  # the paper's inner LLM reads text only
    rewrite_perplexity: bool = True  # measure the answers' perplexity before/after

    # --- SFT: the same steps x batch_size (samples seen) for every training set
    steps: int = 100
    batch_size: int = 32
    lr: float = 2e-4
    max_length: int = 512
    freeze_vision_tower: bool = False  # as LLaVA-1.5's SFT (and the defect-gap bench) do
    # World files added to every variant's SFT data (e.g. [clean.json]): the rest of a
    # LLaVA-1.5-style mix. The paper replaced LLaVA-Instruct-158k inside the 665k mix by the
    # curated set and kept the rest; [] trains on the variant's set alone.
    sft_mix: list[str] = field(default_factory=list)

    # --- evaluation
    benches: list[str] = field(default_factory=lambda: ["pope", "vqa", "mc", "chair"])
    eval_limit: int | None = 100  # benchmark images (null: all)
    eval_batch_size: int = 32
    device: str | None = None  # RM scoring, rewrite and eval; default cuda if available

    def validate(self) -> None:
        if not self.seeds:
            raise RecipeError("seeds: at least one seed")
        for name in ("alpha", "beta"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise RecipeError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.steps < 1 or self.rm_steps < 1:
            raise RecipeError("steps and rm_steps must be >= 1")
        if not 0.0 <= self.rm_backbone_attribute_share < 1.0:
            raise RecipeError("rm_backbone_attribute_share must be in [0, 1)")
        if self.rm_backbone_question_reps < 1:
            raise RecipeError("rm_backbone_question_reps must be >= 1")
        for name in ("rm_backbone_steps", "rm_backbone_attribute_steps",
                     "rm_backbone_question_steps"):
            if getattr(self, name) < 0:
                raise RecipeError(f"{name} must be >= 0 (0: no such phase; with all three 0 "
                                  "the RMs start from base)")
        for name, kinds in (("rm_backbone_kinds", self.rm_backbone_kinds),
                            ("rm_overrides", list(self.rm_overrides))):
            unknown = sorted(set(kinds) - set(RM_KINDS))
            if unknown:
                raise RecipeError(f"{name}: unknown kind(s) {unknown}; known: {list(RM_KINDS)}")
        if self.rm_line_reader not in LINE_READERS:
            raise RecipeError(f"rm_line_reader: {self.rm_line_reader!r}, expected one of "
                              f"{list(LINE_READERS)}")
        settable = set(field_defaults(_reward_config())) - EXPERIMENT_OWNED_RM_FIELDS
        for kind, fields in self.rm_overrides.items():
            unknown = sorted(set(fields) - settable)
            if unknown:
                raise RecipeError(f"rm_overrides.{kind}: {unknown} are not reward-model "
                                  f"settings that can be changed; known: {sorted(settable)}")
            # typed as the config's own fields (YAML 1.1 reads 3e-3 as a string)
            typed = to_dataclass(_reward_config(), {**dict.fromkeys(
                EXPERIMENT_OWNED_RM_FIELDS - {"annotations"}, ""), "annotations": [], **fields},
                where=f"rm_overrides.{kind}")
            self.rm_overrides[kind] = {k: getattr(typed, k) for k in fields}
        if self.rewrite_limit is not None and self.rewrite_limit < 1:
            raise RecipeError("rewrite_limit must be >= 1 or null (all)")
        unknown = sorted(set(self.only or ()) - set(VARIANTS))
        if unknown:
            raise RecipeError(f"only: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
        if not self.rewrite and "curated_rewrite" in (self.only or ()):
            raise RecipeError("only: curated_rewrite needs rewrite: true")

    def variants(self) -> list[str]:
        return [v for v in VARIANTS if (self.rewrite or v != "curated_rewrite")
                and (self.only is None or v in self.only)]


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                    ) -> Align2LLaVAExperiment:
    """The recipe file with `key=value` overrides applied, typed strictly (an unknown key is a
    RecipeError naming the file and the key)."""
    exp = load_settings(Align2LLaVAExperiment, path, overrides)
    exp.validate()
    return exp


# ---------------------------------------------------------------------- curation



def _reward_config() -> type:
    from mmalign.curate.reward_train import RewardTrainConfig

    return RewardTrainConfig


def train_rm_backbone(exp: Align2LLaVAExperiment, world: Path, out: Path) -> Path:
    """The reward models' backbone: `base` tuned first for rm_backbone_attribute_steps on the
    base's attribute set (OUT/rm_backbone_attributes/, its set in
    OUT/rm_backbone_attributes.json), then for rm_backbone_steps on corpus-style, defect-free
    records (OUT/rm_backbone/, its set in OUT/rm_backbone.json); a phase of 0 steps is
    skipped, and with both 0 it is `base` itself. Each phase resumes from its checkpoints
    and is reused once finished."""
    from mmalign.models.base import scene_records
    from mmalign.world.corpus import corpus_style_samples

    def corpus_style(scenes: list) -> list:
        samples = corpus_style_samples(scenes, exp.rm_backbone_reps, exp.rm_backbone_seed)
        return samples + attribute_draw(scenes, exp.rm_backbone_attribute_share,
                                        len(samples), exp.rm_backbone_seed)

    model = repo_path(exp.base)
    if exp.rm_backbone_attribute_steps > 0:
        model = _backbone_phase(
            exp, world, model, out / "rm_backbone_attributes", exp.rm_backbone_attribute_steps,
            lambda scenes: list(scene_records(world, exp.rm_backbone_seed, "attributes",
                                              scenes)),
            {"set_seed": exp.rm_backbone_seed})
    if exp.rm_backbone_steps > 0:
        model = _backbone_phase(
            exp, world, model, out / "rm_backbone", exp.rm_backbone_steps, corpus_style,
            {"reps": exp.rm_backbone_reps, "set_seed": exp.rm_backbone_seed,
             "attribute_share": exp.rm_backbone_attribute_share})
    return model


def train_question_backbone(exp: Align2LLaVAExperiment, world: Path, out: Path, start: Path
                            ) -> Path:
    """The question RM's backbone: `start` tuned rm_backbone_question_steps on question sets
    (OUT/rm_backbone_questions/, its set in OUT/rm_backbone_questions.json); `start` itself
    with 0 steps. Resumes, and is reused once finished, as the other phases."""
    from mmalign.world.corpus import question_set_samples

    if exp.rm_backbone_question_steps == 0:
        return start
    return _backbone_phase(
        exp, world, start, out / "rm_backbone_questions", exp.rm_backbone_question_steps,
        lambda scenes: question_set_samples(scenes, exp.rm_backbone_question_reps,
                                            exp.rm_backbone_question_seed),
        {"reps": exp.rm_backbone_question_reps, "set_seed": exp.rm_backbone_question_seed})


def _backbone_phase(exp: Align2LLaVAExperiment, world: Path, start: Path, folder: Path,
                    steps: int, make_set: Any, settings: dict[str, Any]) -> Path:
    """FOLDER/final: `start` fine-tuned `steps` steps on `make_set(pretraining scenes)`,
    written once to FOLDER.json; refused if FOLDER was run with other settings."""
    from mmalign.io.formats import write_records
    from mmalign.train.sft import SFTRunConfig, train_sft
    from mmalign.world.scene import pretraining_scenes

    data = folder.with_suffix(".json")
    cfg = SFTRunConfig(model=str(start), data=[str(data)], output_dir=str(folder),
                       image_root=str(world), max_steps=steps,
                       per_device_train_batch_size=exp.rm_backbone_batch_size,
                       learning_rate=exp.rm_backbone_lr,
                       freeze_vision_tower=not exp.rm_backbone_train_vision)
    # attribute_share: folders made before the field existed ran without a share
    check_settings(folder / "run.json", {**settings, **asdict(cfg)}, {"attribute_share": 0.0})
    final = folder / "final"
    if (final / "train_log.json").is_file():
        log.info("%s: done already (%s)", folder.name, final)
        return final
    if not data.is_file():
        try:
            scenes = pretraining_scenes(world, f"the set of {folder.name}")
        except ValueError as e:  # a recipe's world without them: exit 2 with the message
            raise RecipeError(str(e)) from None
        samples = make_set(scenes)
        write_records(data, samples, "llava")
        log.info("%s: %d records -> %s", folder.name, len(samples), data)
    return Path(train_sft(cfg))


def attribute_draw(scenes: list, share: float, beside: int, seed: int) -> list:
    """`world.corpus.attribute_samples` over `scenes`, as many drawn at random (seeded) as
    make them `share` of a set with `beside` other records; all of them if there are fewer."""
    import numpy as np

    from mmalign.models.base import scene_samples

    if share == 0.0:
        return []
    rng = np.random.default_rng([1, seed])  # not scene_records' stream: run a2m's draw
    pool = list(scene_samples(scenes, "attributes", rng))
    wanted = min(len(pool), round(beside * share / (1.0 - share)))
    return [pool[int(i)] for i in sorted(rng.permutation(len(pool))[:wanted])]


def train_reward_model(exp: Align2LLaVAExperiment, kind: str, world: Path, out: Path,
                       backbone: Path, readers: dict[str, Path]) -> dict[str, Any]:
    """OUT/rm_<kind>: the reward model of `kind` trained from `backbone` on the world's
    annotations, with `rm_overrides[kind]` applied; returns its report (held-out pairwise
    accuracy before/after, pair counts, seconds). `readers`: the models rm_line_reader
    names (rm_backbone, base), for an RM that reads a line feature."""
    from mmalign.curate.reward_train import RewardTrainConfig, train_reward
    from mmalign.models.reward import HEAD_FILE, LINE_FEATURES

    folder = out / f"rm_{kind}"
    cfg = RewardTrainConfig(
        model=str(backbone), annotations=[str(world / "annotations" / f"{kind}s.jsonl")],
        output_dir=str(folder), kind=kind, image_root=str(world),
        eval_fraction=exp.rm_eval_fraction, augment_rate=exp.rm_augment_rate,
        max_steps=exp.rm_steps, per_device_train_batch_size=exp.rm_batch_size,
        group_pairs=exp.rm_group_pairs, learning_rate=exp.rm_lr, max_length=exp.rm_max_length,
        layout=exp.rm_layout,
        lora=exp.rm_lora, lora_r=exp.rm_lora_r, lora_alpha=2 * exp.rm_lora_r,
        freeze_vision_tower=exp.rm_freeze_vision, logging_steps=max(1, min(25, exp.rm_steps // 4)),
        save_steps=max(50, exp.rm_steps // 4), seed=exp.rm_seed)  # an interrupted run resumes
    cfg = replace(cfg, **exp.rm_overrides.get(kind, {}))
    if set(LINE_FEATURES) & set(cfg.likelihood_features or ()) and exp.rm_line_reader != "backbone":
        cfg = replace(cfg, line_reader=str(readers[exp.rm_line_reader]))
    check_settings(folder / "run.json", asdict(cfg), field_defaults(RewardTrainConfig))
    report = folder / "report.json"
    if report.is_file() and (folder / "final" / HEAD_FILE).is_file():
        log.info("%s RM: done already (%s)", kind, folder / "final")
        return json.loads(report.read_text())
    return train_reward(cfg)


class LazyRMScorer:
    """`rm_scorer` of a saved reward model, loaded on the first call: a finished scoring run
    (which `score_corpus` recognises from its fingerprint) needs no model at all."""

    def __init__(self, path: Path, batch_size: int, device: str):
        self.path, self.batch_size, self.device = path, batch_size, device
        self._score = None

    def __call__(self, items):
        if self._score is None:
            from mmalign.curate.score import rm_scorer
            from mmalign.models.reward import VLMRewardModel

            rm = VLMRewardModel.from_pretrained(self.path, device=self.device)
            self._score = rm_scorer(rm, self.batch_size)
        return self._score(items)


def score(exp: Align2LLaVAExperiment, world: Path, out: Path, rms: dict[str, Path],
          device: str) -> dict[str, Any]:
    """OUT/score/scored.jsonl: corpus.json with both RMs' scores (resumable by itself)."""
    from mmalign.curate.score import score_corpus
    from mmalign.models.reward import HEAD_FILE
    from mmalign.pipeline import file_hash

    # The same model identity as `mmalign curate score` records: head hash @ path.
    models = {k: file_hash(p / HEAD_FILE) + "@" + str(p) for k, p in rms.items()}
    return score_corpus(
        world / "corpus.json", out / "score",
        LazyRMScorer(rms["question"], exp.rm_score_batch_size, device),
        LazyRMScorer(rms["answer"], exp.rm_score_batch_size, device),
        image_root=world, batch_size=exp.score_batch_size, models=models,
        log=lambda m: log.info(m.strip()))


def select(exp: Align2LLaVAExperiment, out: Path) -> dict[str, Any]:
    """OUT/select/selected.jsonl: the cascade's choice (reused while alpha/beta are unchanged;
    the scores it reads cannot change without a refused settings change upstream)."""
    from mmalign.curate.select import run_select

    folder = out / "select"
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / "selected.jsonl").is_file():
        old = json.loads(manifest.read_text())
        if (old.get("alpha"), old.get("beta")) == (exp.alpha, exp.beta):
            return old
    return run_select(out / "score", folder, alpha=exp.alpha, beta=exp.beta)


def read_corpus_defects(world: Path) -> dict[str, list[dict]]:
    """Record id -> its defects as the world's truth file has them (type, detail, turn; the
    measurement only)."""
    defects = {}
    with open(world / "truth" / "corpus_defects.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                defects[row["id"]] = row["defects"]
    return defects


def read_truth(world: Path) -> dict[str, list[str]]:
    """Record id -> its defect types, from the world's truth file (the measurement only)."""
    return defect_types(read_corpus_defects(world))


def defect_types(defects: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {rid: [d["type"] for d in ds] for rid, ds in defects.items()}


def kept_scores(path: Path, pairs: list[dict], score: Any) -> list[dict]:
    """A judge's scores of the held-out pairs, one line per pair in eval_pairs.jsonl's order:
    read from `path`, or made by `score()` (-> better scores, worse scores) and kept there."""
    if not path.is_file():
        from mmalign.curate.reward_train import write_eval_scores

        write_eval_scores(path, *score())
    with open(path, encoding="utf-8") as f:
        scores = [json.loads(line) for line in f if line.strip()]
    if len(scores) != len(pairs):
        raise ValueError(f"{path}: {len(scores)} scores for {len(pairs)} held-out pairs")
    return scores


def rm_eval_scores(kind: str, world: Path, rm_dir: Path, pairs: list[dict]) -> list[dict]:
    """The RM's scores of all its held-out pairs (eval_pairs.jsonl's order): rm_dir/
    eval_scores.jsonl (written by training), or, for an RM trained before that file existed,
    scored now by training's own `held_out_scores` with rm_dir/final and kept."""

    def score() -> tuple[list[float], list[float]]:
        from mmalign.curate.annotations import RewardPair
        from mmalign.curate.reward_train import held_out_scores
        from mmalign.models.reward import VLMRewardModel

        log.info("%s RM: scoring its %d held-out pairs for the truth measurement", kind,
                 len(pairs))
        held_out = [RewardPair(**p) for p in pairs]
        roots = dict.fromkeys((p.group for p in held_out), world)
        return held_out_scores(VLMRewardModel.from_pretrained(rm_dir / "final"), held_out,
                               roots, batch_size=32)

    return kept_scores(rm_dir / "eval_scores.jsonl", pairs, score)


class HeldOut(NamedTuple):
    """An RM's held-out pairs measured against the truth file (`held_out_truth`)."""
    pairs: list[dict]
    qualities: list[tuple[float, float]]  # true quality of the annotators' (better, worse)
    labels: list[str]  # the defect label(s) of the truly worse side
    sides: list[tuple[dict, dict]]  # each side's truth row, with "questions": its count


def against_truth(world: Path, kind: str, rm_dir: Path, held: HeldOut) -> dict[str, Any]:
    """The RM's held-out annotation pairs measured against the candidates' noiseless quality
    (the world's truth file; measurement only):
      ceiling          how well a judge that knew every true quality would score on the
                       annotators' (noisy) order, truth ties broken at random: the ceiling the
                       annotator noise puts on held-out pairwise accuracy; truth_ties is the
                       share of pairs whose order is noise alone;
      truth_order      the RM's accuracy on the true order, over the pairs whose true
                       qualities differ (ties left out);
      by_defect        truth_order per defect label(s) of the truly worse candidate;
      blind_ceiling    per defect type, the ceiling of a judge that takes it for clean
                       (`blind_ceilings`).
    `held` is `held_out_truth(world, kind, rm_dir)`."""
    pairs, qualities, labels = held.pairs, held.qualities, held.labels
    n = len(pairs)
    agree = sum(qb > qw for qb, qw in qualities)
    ties = sum(qb == qw for qb, qw in qualities)
    return {"pairs": n, "truth_agrees": round(agree / max(n, 1), 4),
            "truth_ties": round(ties / max(n, 1), 4),
            "ceiling": round((agree + ties / 2) / max(n, 1), 4),
            "blind_ceiling": blind_ceilings(kind, held),
            **truth_order(rm_eval_scores(kind, world, rm_dir, pairs), qualities, labels)}


def blind_ceilings(kind: str, held: HeldOut) -> dict[str, float]:
    """Per defect type, the held-out accuracy of a judge that knows every candidate's true
    quality but takes that defect for clean (the world's own quality rule, recomputed), truth
    ties broken at random: below the target, an RM must see that defect to reach it."""
    from mmalign.world.defects import QUALITY
    from mmalign.world.oracle import question_set_quality

    def quality(side: dict, blind: str | None) -> float:
        if kind == "answer":
            return QUALITY[None if side["defect"] == blind else side["defect"]]
        labels = [None if d == blind else d for d in side["defects"]]
        return question_set_quality(labels + [None] * (side["questions"] - len(labels)))

    for (pair, side) in zip(held.pairs, held.sides, strict=True):
        for one in side:
            if abs(quality(one, None) - one["quality"]) > 1e-3:  # the world's rule moved
                raise ValueError(f"{pair['group']}: true quality {one['quality']} is not the "
                                 f"world's rule's {quality(one, None):.4f}")
    kinds = sorted({d for side in held.sides for one in side for d in truth_defects(one) if d})
    out = {}
    for blind in kinds:
        hits = 0.0
        for side in held.sides:
            b, w = (quality(one, blind) for one in side)
            hits += 1.0 if b > w else 0.5 if b == w else 0.0
        out[blind] = round(hits / max(len(held.pairs), 1), 4)
    return out


def truth_defects(row: dict) -> list[str | None]:
    """A candidate's defect label(s) in the truth file: a question set's list, or an
    answer's one label (None: clean) as a list of one."""
    return row.get("defects", [row.get("defect")])


def held_out_truth(world: Path, kind: str, rm_dir: Path) -> HeldOut:
    """The RM's held-out pairs (eval_pairs.jsonl), each one's true (better, worse) quality as
    the annotation names them, and the defect label(s) of the truly worse side."""
    from mmalign.curate.annotations import read_annotations, rm_text

    groups = {g.id: g for g in read_annotations(world / "annotations" / f"{kind}s.jsonl",
                                                image_root=world, check_images=False)}
    truth = {}
    with open(world / "truth" / "annotations.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["file"] == f"{kind}s.jsonl":
                truth[row["id"]] = row["candidates"]
    with open(rm_dir / "eval_pairs.jsonl", encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    if any(p["origin"] != "annotation" for p in pairs):  # held-out pairs are never augmented
        raise ValueError(f"{rm_dir / 'eval_pairs.jsonl'}: held-out pairs with augmentation")
    qualities, labels, sides = [], [], []
    for pair in pairs:
        g = groups[pair["group"]]
        index = {rm_text(g, c): i for i, c in enumerate(g.candidates)}
        tb, tw = ({**truth[g.id][index[pair[k]]],  # a question set's candidate: its list
                   "questions": len(g.candidates[index[pair[k]]]) if kind == "question" else 1}
                  for k in ("better", "worse"))
        qualities.append((tb["quality"], tw["quality"]))
        sides.append((tb, tw))
        low = tw if tb["quality"] > tw["quality"] else tb
        labels.append("+".join(sorted({str(x) for x in truth_defects(low)})) or "None")
    return HeldOut(pairs, qualities, labels, sides)


def truth_order(scores: list[dict], qualities: list[tuple[float, float]], labels: list[str]
                ) -> dict[str, Any]:
    """A judge's accuracy on the true order of the pairs whose true qualities differ, overall
    and per defect label(s) of the truly worse side; `scores` as eval_scores.jsonl's rows."""
    right = ordered = 0
    by_defect: dict[str, list[int]] = {}
    for score, (qb, qw), key in zip(scores, qualities, labels, strict=True):
        if qb == qw:
            continue
        ok = (score["better_score"] > score["worse_score"]) == (qb > qw)
        right += ok
        ordered += 1
        by_defect.setdefault(key, [0, 0])
        by_defect[key][0] += ok
        by_defect[key][1] += 1
    return {"truth_order": {"pairs": ordered, "accuracy": round(right / max(ordered, 1), 4)},
            "by_defect": {k: {"pairs": c, "accuracy": round(r / c, 4)}
                          for k, (r, c) in sorted(by_defect.items(), key=lambda x: -x[1][1])}}


def backbone_likelihood(world: Path, base: Path, rm_dir: Path, held: HeldOut
                        ) -> dict[str, Any]:
    """The answer RM's backbone as a judge without training: each held-out answer scored by
    its log-likelihood under `base` (image and question through the chat template), measured
    on the true order like the RM. Where it is at chance on a defect, the backbone cannot tell
    that defect from the image either, and the RM has to learn the binding itself. Scores are
    kept in rm_dir/backbone_scores.jsonl; `held` is `held_out_truth(world, "answer", rm_dir)`."""
    pairs, qualities, labels = held.pairs, held.qualities, held.labels
    scores = kept_scores(rm_dir / "backbone_scores.jsonl", pairs,
                         lambda: answer_loglik(base, world, pairs))
    return {"model": str(base), **truth_order(scores, qualities, labels)}


def answer_loglik(base: Path, world: Path, pairs: list[dict]
                  ) -> tuple[list[float], list[float]]:
    """Sum of log p(answer tokens | image, question) under `base` for each pair's two sides
    (answer RM texts, "Question: q\nAnswer: a")."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmalign.curate.annotations import split_answer_text
    from mmalign.curate.rewrite import answer_loglik as loglik_under

    model = AutoModelForImageTextToText.from_pretrained(base)
    processor = AutoProcessor.from_pretrained(base)
    cache: dict[tuple[str, str], float] = {}

    def loglik(image: str, text: str) -> float:
        if (image, text) not in cache:
            question, answer = split_answer_text(text)
            cache[(image, text)] = loglik_under(model, processor, image, question, answer, world)
        return cache[(image, text)]

    return ([loglik(p["image"], p["better"]) for p in pairs],
            [loglik(p["image"], p["worse"]) for p in pairs])


def defect_rate(ids: list[str], truth: dict[str, list[str]]) -> dict[str, Any]:
    """Share of the records with at least one defect label, and per defect type the share of
    records carrying it."""
    missing = [i for i in ids if i not in truth]
    if missing:
        raise ValueError(f"{len(missing)} record id(s) not in the truth file, e.g. "
                         f"{missing[0]!r}: is this the world the corpus came from?")
    n = len(ids)
    by_type: dict[str, int] = {}
    for i in ids:
        for t in set(truth[i]):
            by_type[t] = by_type.get(t, 0) + 1
    defective = sum(1 for i in ids if truth[i])
    return {"records": n, "defective": defective, "rate": round(defective / n, 4) if n else None,
            "by_type": {t: round(c / n, 4) for t, c in sorted(by_type.items())}}


def draw_like(pool: list, counts: dict[Any, int], seed: int, name: str,
              key: Any = lambda s: s.category) -> list:
    """`counts[k]` records with `key(record) == k` drawn from `pool` at random (seeded)."""
    rng = random.Random(f"align2llava:{name}:{seed}")  # a stream of its own per set and seed
    by_key: dict[Any, list] = {}
    for s in pool:
        by_key.setdefault(key(s), []).append(s)
    out = []
    for k, n in counts.items():
        have = by_key.get(k, [])
        if len(have) < n:
            raise ValueError(f"{name}: {n} records of {k} wanted, the pool has {len(have)}")
        out.extend(rng.sample(have, n))
    return out


@functools.cache
def _vocabulary_pattern() -> re.Pattern:
    from mmalign.world import vocab

    words = {*vocab.SHAPES, *vocab.PLURALS.values(), *vocab.COLOR_NAMES, *vocab.SIZES,
             *vocab.CLEAN_POSITION.values(), *vocab.MACHINE_POSITION.values(),
             *vocab.NUMBER_WORDS, "above", "below"}  # "left of": "left" is a position
    # longest first, so "top left" is masked whole rather than as "top" + "left"
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def question_template(sample: Any) -> str:
    """The record's first question with the image placeholder dropped and every word of the
    world's vocabulary (shapes, colours, sizes, positions, numbers, relations) masked: on the
    world this names the question kind and its phrasing variant."""
    from mmalign.records import IMAGE_TOKEN

    first = next(t.content for t in sample.turns if t.role == "user")
    return _vocabulary_pattern().sub("_", first.replace(IMAGE_TOKEN, "")).strip()


def category_template(sample: Any) -> tuple[str, str]:
    """The `matched` arm's composition key."""
    return sample.category, question_template(sample)


def template_mix(samples: list) -> dict[str, Any]:
    """Per category: the number of distinct first-question templates, their effective number
    (exp of the entropy of their shares) and the commonest ones with their shares."""
    by_cat: dict[str, dict[str, int]] = {}
    for s in samples:
        counts = by_cat.setdefault(s.category, {})
        t = question_template(s)
        counts[t] = counts.get(t, 0) + 1
    out = {}
    for cat, counts in sorted(by_cat.items()):
        n = sum(counts.values())
        shares = sorted(((c / n, t) for t, c in counts.items()), reverse=True)
        entropy = -sum(p * math.log(p) for p, _ in shares)
        out[cat] = {"records": n, "templates": len(counts),
                    "effective_templates": round(math.exp(entropy), 2),
                    "top": {t: round(p, 3) for p, t in shares[:5]}}
    return out


def rewrite(exp: Align2LLaVAExperiment, world: Path, out: Path, selected: list,
            device: str) -> dict[str, Any]:
    """OUT/rewrite: `rewrite_limit` of the selected records (evenly spaced, so every category
    and score range is represented) through run_rewrite with the base VLM as rewriter and
    reviewer and the scene guard; returns run_rewrite's manifest."""
    from mmalign.curate.rewrite import RewriteConfig, SceneGuard, run_rewrite
    from mmalign.io.formats import write_records

    folder = out / "rewrite"
    cfg = RewriteConfig(include_image=exp.rewrite_include_image,
                        max_new_tokens=exp.rewrite_max_new_tokens,
                        batch_size=exp.rewrite_batch_size, seed=0)
    check_settings(folder / "run.json", {"model": str(repo_path(exp.base)),
                                         "limit": exp.rewrite_limit,
                                         "perplexity": exp.rewrite_perplexity, **asdict(cfg)})
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / "rewritten.jsonl").is_file():
        return json.loads(manifest.read_text())
    n = len(selected) if exp.rewrite_limit is None else min(exp.rewrite_limit, len(selected))
    picks = [selected[math.floor(i * len(selected) / n)] for i in range(n)]
    write_records(folder / "input.jsonl", picks, "jsonl")
    from mmalign.backends.hf import HFGenerator

    gen = HFGenerator.from_pretrained(repo_path(exp.base), batch_size=exp.rewrite_batch_size,
                                      device=device, dtype="fp32")
    t0 = time.time()
    result = run_rewrite(folder / "input.jsonl", folder, gen, SceneGuard.from_world(world), cfg,
                         image_root=world,
                         perplexity_model=(gen.model, gen.processor)
                         if exp.rewrite_perplexity else None,
                         log=lambda m: log.info(m.strip()))
    log.info("rewrite: %s in %.0f s", result["counts"], time.time() - t0)
    return result


def build_sets(exp: Align2LLaVAExperiment, world: Path, out: Path, device: str
               ) -> tuple[dict[str, dict[int, Path]], dict[str, Any]]:
    """Steps 1-5: the training set of every (variant, seed), and the curation report."""
    from mmalign.io.formats import read_records, write_records

    backbone = train_rm_backbone(exp, world, out)
    starts = {kind: backbone if kind in exp.rm_backbone_kinds else repo_path(exp.base)
              for kind in RM_KINDS}
    starts["question"] = train_question_backbone(exp, world, out, starts["question"])
    readers = {"rm_backbone": backbone, "base": repo_path(exp.base)}
    reports = {kind: train_reward_model(exp, kind, world, out, starts[kind], readers)
               for kind in RM_KINDS}
    rms = {kind: Path(r["final"]) for kind, r in reports.items()}
    scored = score(exp, world, out, rms, device)
    selection = select(exp, out)

    corpus = read_records(world / "corpus.json", image_root=world)
    curated = read_records(out / "select" / "selected.jsonl", image_root=world)
    truth = read_truth(world)
    counts: dict[str, int] = {}
    for s in curated:
        counts[s.category] = counts.get(s.category, 0) + 1
    clean_pool = [s for s in corpus if not truth.get(s.id, ["?"])]

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sets: dict[str, dict[int, Path]] = {
        "full": dict.fromkeys(exp.seeds, world / "corpus.json"),
        "curated": dict.fromkeys(exp.seeds, out / "select" / "selected.jsonl")}
    rates: dict[str, Any] = {"corpus": defect_rate([s.id for s in corpus], truth),
                             "curated": defect_rate([s.id for s in curated], truth)}
    templates: dict[tuple[str, str], int] = {}
    for s in curated:
        templates[category_template(s)] = templates.get(category_template(s), 0) + 1
    draws = {"random": (corpus, counts, lambda s: s.category),
             "matched": (corpus, templates, category_template),
             "oracle": (clean_pool, counts, lambda s: s.category)}
    for name, (pool, wanted, key) in draws.items():
        sets[name], rates[name] = {}, {}
        for seed in exp.seeds:
            path = data / f"{name}-s{seed}.jsonl"
            if not path.is_file():  # a deterministic draw: reuse it
                write_records(path, draw_like(pool, wanted, seed, name, key), "jsonl")
            drawn = read_records(path, image_root=world)
            sets[name][seed] = path
            rates[name][f"s{seed}"] = defect_rate([s.id for s in drawn], truth)

    rewrite_report = None
    if exp.rewrite:
        rewrite_report = rewrite(exp, world, out, curated, device)
        path = data / "curated_rewrite.jsonl"
        if not path.is_file():
            new = {s.id: s for s in read_records(out / "rewrite" / "rewritten.jsonl",
                                                 image_root=world)}
            write_records(path, [new.get(s.id, s) for s in curated], "jsonl")
        sets["curated_rewrite"] = dict.fromkeys(exp.seeds, path)

    held = {kind: held_out_truth(world, kind, out / f"rm_{kind}") for kind in reports}
    corpus_rate, curated_rate = rates["corpus"]["rate"], rates["curated"]["rate"]
    ratio = curated_rate / corpus_rate if corpus_rate else None
    curation = {
        "reward_models": {kind: {
            "held_out_pairwise_accuracy": r["eval_pairwise_accuracy"],
            "before_training": r["eval_pairwise_accuracy_before"],
            "backbone": str(starts[kind]), "readout": r.get("readout", "last"),
            "held_out_pairs": r["pairs"]["eval"]["annotation"],
            "against_truth": against_truth(world, kind, out / f"rm_{kind}", held[kind]),
            **({"backbone_likelihood": backbone_likelihood(
                world, starts[kind], out / "rm_answer", held[kind])}
               if kind == "answer" else {}),
            "train_pairs": r["pairs"]["train"]["annotation"] + r["pairs"]["train"]["augmented"],
            "steps": r["steps"], "seconds": r["seconds"]} for kind, r in reports.items()},
        "scoring": {"records": scored["counts"]["out"], "rejected": scored["counts"]["rejected"],
                    "seconds": scored.get("seconds")},
        "selection": {"alpha": exp.alpha, "beta": exp.beta, "in": selection["counts"]["in"],
                      "out": selection["counts"]["out"],
                      "fraction": round(selection["counts"]["out"]
                                        / max(selection["counts"]["in"], 1), 4),
                      "categories": selection["categories"]},
        "defect_rate": rates,
        "question_templates": {"corpus": template_mix(corpus), "curated": template_mix(curated)},
        "defect_rate_ratio_curated_to_corpus": None if ratio is None else round(ratio, 4),
        "targets": {
            "rm_accuracy_at_least_0.80": {
                kind: (r["eval_pairwise_accuracy"] or 0.0) >= 0.80
                for kind, r in reports.items()},
            "curated_defect_rate_at_most_a_third": ratio is not None and ratio <= 1 / 3},
        "rewrite": None if rewrite_report is None else {
            k: rewrite_report.get(k) for k in ("counts", "reasons", "perplexity", "guard",
                                               "records_changed", "seconds")},
    }
    (out / "curation.json").write_text(json.dumps(curation, indent=1) + "\n")
    log.info("RM held-out accuracy: question %s, answer %s | selected %d of %d | defect "
             "rate corpus %s, curated %s (ratio %s)",
             curation["reward_models"]["question"]["held_out_pairwise_accuracy"],
             curation["reward_models"]["answer"]["held_out_pairwise_accuracy"],
             selection["counts"]["out"], selection["counts"]["in"], corpus_rate, curated_rate,
             curation["defect_rate_ratio_curated_to_corpus"])
    return sets, curation


# ---------------------------------------------------------------------- training, evaluation


def train_variant(exp: Align2LLaVAExperiment, variant: str, seed: int, data: Path,
                  world: Path, run: Path) -> Path:
    """SFT `base` on one training set into `run`, or return its final model when it exists
    (trained on the same files, by content)."""
    from mmalign.pipeline import file_hash
    from mmalign.train.sft import SFTRunConfig, train_sft

    cfg = SFTRunConfig(
        model=str(repo_path(exp.base)),
        data=[str(data), *mix_files(world, exp.sft_mix, run.parent)],
        image_root=str(world),
        output_dir=str(run), max_steps=exp.steps, per_device_train_batch_size=exp.batch_size,
        learning_rate=exp.lr, max_length=exp.max_length, seed=seed,
        freeze_vision_tower=exp.freeze_vision_tower,
        logging_steps=max(1, min(10, exp.steps // 4)), save_steps=max(50, exp.steps // 2))
    # By content as well as by path: an arm copied from another out folder (or a selection
    # made again by another RM) must not pass for this one. A run recorded before the hashes
    # is taken to have trained on the files there now, and its record gains their hashes.
    hashes = [file_hash(d) for d in cfg.data]
    check_settings(run / "run.json", {"variant": variant, **asdict(cfg), "data_sha256": hashes},
                   {"data_sha256": hashes})
    final = run / "final"
    if (final / "train_log.json").is_file():
        log.info("%s: done already (%s)", run.name, final)
        return final
    t0 = time.time()
    final = train_sft(cfg)
    (run / "seconds.json").write_text(json.dumps({"train": round(time.time() - t0, 1)}) + "\n")
    return final


def columns_of(results: dict[str, list[dict]], benches: list[str]) -> list[Column]:
    """Every headline column the runs have, benchmarks in recipe order."""
    cols: list[Column] = []
    for rows in results.values():
        for row in rows:
            cols += [c for c in row if c not in cols]
    return sorted(cols, key=lambda c: benches.index(c[0]) if c[0] in benches else len(benches))


def table_of(results: dict[str, list[dict]], columns: list[Column]) -> str:
    """summarise's table, then one "a - b" row per pair of DIFFS present (each made by
    summarise itself on the two variants, so the maths is in one place)."""
    lines = [summarise(results, columns)]
    for a, b in DIFFS:
        if a in results and b in results:
            pair = summarise({b: results[b], a: results[a]}, columns, reference=b)
            lines.append(pair.splitlines()[-1])
    return "\n".join(lines)


def run_experiment(exp: Align2LLaVAExperiment) -> tuple[dict[str, list[dict]], str]:
    """Curate, build the five training sets, train and evaluate every (variant, seed);
    return the results and the markdown table."""
    import torch

    exp.validate()
    device = exp.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(exp.out)
    out.mkdir(parents=True, exist_ok=True)
    world = ensure_world(exp.world, exp.world_seed, "corpus.json", log.info)
    t0 = time.time()
    sets, _ = build_sets(exp, world, out, device)
    log.info("curation done in %.0f s", time.time() - t0)

    def evaluate(model: Path, folder: Path) -> dict:
        return evaluate_model(model, world, folder, exp.benches, exp.eval_limit,
                              batch_size=exp.eval_batch_size, device=device, log=log.info)

    results: dict[str, list[dict]] = {"base": [evaluate(repo_path(exp.base),
                                                        out / "eval-base")]}
    show_row("base", None, results["base"][-1])
    for variant in exp.variants():
        results[variant] = []
        for seed in exp.seeds:
            run = out / f"{variant}-s{seed}"
            final = train_variant(exp, variant, seed, sets[variant][seed], world, run)
            results[variant].append(evaluate(final, run / "eval"))
            show_row(variant, seed, results[variant][-1])

    table = table_of(results, columns_of(results, exp.benches))
    write_results(out, "align2llava", asdict(exp), results, table)
    return results, table


def main(argv: list[str] | None = None) -> int:
    return recipe_main(sys.argv[1:] if argv is None else argv, __doc__,
                       lambda recipe, overrides: run_experiment(
                           load_experiment(recipe, overrides))[1])


if __name__ == "__main__":
    sys.exit(main())
