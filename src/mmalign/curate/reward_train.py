"""Train a question or answer reward model on annotation pairs, through HF Trainer.

    report = train_reward(RewardTrainConfig(model="tiny/", annotations=["answers.jsonl"],
                                            output_dir="rm_answer", image_root="world/"))

Steps: read the annotation groups (any accepted layout, `curate.annotations`), hold out a
fraction of the groups (by image, so no text of a held-out image is trained on), build
(better, worse) pairs with augmentation on the training side only (held-out accuracy is
measured on real human pairs), train with -log sigmoid(s_better - s_worse), report held-out
pairwise accuracy before and after training (the trained RM's score of each held-out pair in
`eval_scores.jsonl`, beside `eval_pairs.jsonl`), and save the reward model with its head to
`output_dir/final`.

The loss goes through `Trainer.compute_loss` (a public hook), so `accelerate launch`, gradient
accumulation, schedulers and loggers work as for any HF model. Each batch holds the better
texts of n pairs followed by their worse texts (2n rows, one forward), as the released code did.
With `save_steps` > 0 the Trainer writes `checkpoint-N/` folders (the reward model's state dict,
optimiser, scheduler and RNG states: the model is not a `PreTrainedModel`, so Trainer saves
its state dict, which is what our head + backbone is), and a rerun into the same `output_dir`
resumes from the last one instead of starting over. The final save is ours (`final/`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmalign.curate.annotations import (
    DEFAULT_AUGMENT_RATE,
    AnnotationGroup,
    RewardPair,
    build_pairs,
    read_annotations,
    split_groups,
    write_pairs,
)

log = logging.getLogger(__name__)


@dataclass
class RewardTrainConfig:
    """One reward-model training run. Field names follow HF's TrainingArguments where they map."""

    model: str  # the backbone: folder or hub id of a VLM (or a saved reward model to continue)
    annotations: list[str]  # annotation files, all of one kind
    output_dir: str
    kind: str | None = None  # question | answer; default: detected from the files
    image_root: str | None = None  # default: each annotation file's folder
    eval_fraction: float = 0.1  # share of annotation groups (images) held out
    # held-out groups read from these files instead of a random split (a fixed test set across
    # runs on different training files); training groups of a held-out image are dropped
    eval_annotations: list[str] | None = None
    train_groups: int | None = None  # train on the first N training groups (learning curves)
    augment_rate: float = DEFAULT_AUGMENT_RATE  # paper: 0.25 per candidate
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 8  # pairs (groups with group_pairs) per device and step
    group_pairs: bool = False  # batch by annotation group, each text encoded once (InstructGPT)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: int | None = None  # cut longer texts (never image tokens); None: no limit
    # user: the whole text in the user turn (the paper's); turns: the scored text as the
    # assistant's turn, after the image (and question) (models/reward.py)
    layout: str = "user"
    # last: the paper's scalar head at the last token; implicit: beta * (log pi - log pi_ref)
    # of the scored text, so the pairwise loss is DPO's; likelihood: an MLP over statistics of
    # the frozen backbone's token log-probs, fitted on features computed once (max_steps,
    # per_device_train_batch_size and learning_rate are then the head fit's). The last two
    # need the `turns` layout (models/reward.py)
    readout: str = "last"
    beta: float = 0.1  # the implicit readout's scale
    head_hidden: int = 32  # the likelihood readout's MLP width
    # the likelihood head's inputs (names from models/reward.py
    # LIKELIHOOD_FEATURES; None: DEFAULT_LIKELIHOOD_FEATURES, the four of sum, mean, min, tokens)
    likelihood_features: list[str] | None = None
    # the VLM that reads single lines for the line features (redundancy, answer_redundancy),
    # saved with the head
    # (None: the backbone reads them)
    line_reader: str | None = None
    # how the likelihood head reads a text (models/reward.py LIKELIHOOD_HEADS): set, an MLP
    # over its features; lines, the mean of a line MLP over its lines plus an MLP over its
    # features and line count
    likelihood_head: str = "set"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    freeze_vision_tower: bool = False  # full fine-tuning with a frozen vision tower
    eval_batch_size: int = 16
    logging_steps: int = 10
    save_steps: int = 0  # > 0: a resumable checkpoint every N steps (0: only the final save)
    save_total_limit: int | None = 2  # checkpoints kept (the newest)
    resume: bool = True  # continue from the last checkpoint in output_dir if there is one
    report_to: list[str] = field(default_factory=lambda: ["none"])
    seed: int = 0
    dtype: str = "fp32"


class RewardPairDataset:
    """Pairs as a map-style dataset; the collator turns a list of pairs into one batch."""

    def __init__(self, pairs: list[RewardPair], image_root: dict[str, Path]):
        self.pairs = pairs
        self.image_root = image_root  # group id -> image root (files may differ in root)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.pairs[i]
        return {"image": str(self.image_root[p.group] / p.image), "better": p.better,
                "worse": p.worse}


class PairCollator:
    """[{image, better, worse}] * n -> model inputs for 2n rows (better first) + n_pairs."""

    def __init__(self, processor: Any, max_length: int | None, layout: str = "user",
                 score_mask: bool = False):
        self.processor = processor
        self.max_length = max_length
        self.layout = layout
        self.score_mask = score_mask  # the implicit readout's scored-token mask

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from mmalign.models.reward import RewardInput, encode_inputs

        items = ([RewardInput([r["image"]], r["better"]) for r in rows]
                 + [RewardInput([r["image"]], r["worse"]) for r in rows])
        batch = encode_inputs(self.processor, items, self.max_length, self.layout,
                              self.score_mask)
        batch["n_pairs"] = len(rows)
        return batch


class RewardGroupDataset:
    """The pairs of each annotation group (augmented ones included) as one item."""

    def __init__(self, pairs: list[RewardPair], image_root: dict[str, Path]):
        by_group: dict[str, list[RewardPair]] = {}
        for p in pairs:
            by_group.setdefault(p.group, []).append(p)
        for group, g in by_group.items():
            images = {p.image for p in g}
            if len(images) != 1:  # pairs of a group share their image by construction
                raise ValueError(f"annotation group {group!r} mixes images {sorted(images)}")
        self.groups = list(by_group.values())
        self.image_root = image_root

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self.groups[i]
        return {"image": str(self.image_root[g[0].group] / g[0].image),
                "pairs": [(p.better, p.worse) for p in g]}


class GroupCollator:
    """[{image, pairs}] * n -> one row per distinct text of each group, the row indices of
    every pair's better and worse side, and per-pair weights that average within a group and
    then over the groups."""

    def __init__(self, processor: Any, max_length: int | None, layout: str = "user",
                 score_mask: bool = False):
        self.processor = processor
        self.max_length = max_length
        self.layout = layout
        self.score_mask = score_mask  # the implicit readout's scored-token mask

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from mmalign.models.reward import RewardInput, encode_inputs

        items: list[RewardInput] = []
        better, worse, weight = [], [], []
        for r in rows:
            index: dict[str, int] = {}
            for pair in r["pairs"]:
                for text in pair:
                    if text not in index:
                        index[text] = len(items)
                        items.append(RewardInput([r["image"]], text))
                better.append(index[pair[0]])
                worse.append(index[pair[1]])
                weight.append(1.0 / (len(r["pairs"]) * len(rows)))
        batch = encode_inputs(self.processor, items, self.max_length, self.layout,
                              self.score_mask)
        batch["better_index"] = torch.tensor(better)
        batch["worse_index"] = torch.tensor(worse)
        batch["pair_weight"] = torch.tensor(weight)
        return batch


def _trainer_class():
    from transformers import Trainer

    from mmalign.models.reward import pairwise_loss

    class PairwiseRewardTrainer(Trainer):
        """Trainer whose loss is the pairwise Bradley-Terry loss (public hook only)."""

        # Our loss is a mean over the micro-batch's pairs, not a sum over a global count:
        # the Trainer must divide it by the accumulation steps itself.
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "better_index" in inputs:  # grouped batch (GroupCollator)
                b, w = inputs.pop("better_index"), inputs.pop("worse_index")
                weight = inputs.pop("pair_weight")
                scores = model(**inputs)  # one per distinct text
                loss = pairwise_loss(scores[b], scores[w], weight)
            else:
                n = inputs.pop("n_pairs")
                scores = model(**inputs)  # (2n,): better rows, then worse rows
                loss = pairwise_loss(scores[:n], scores[n:])
            return (loss, {"scores": scores}) if return_outputs else loss

    return PairwiseRewardTrainer


def load_groups(cfg: RewardTrainConfig, files: list[str] | None = None, kind: str | None = None
                ) -> tuple[list[AnnotationGroup], dict[str, Path]]:
    groups, roots = [], {}
    kind = kind or cfg.kind
    for path in cfg.annotations if files is None else files:
        root = Path(cfg.image_root) if cfg.image_root else Path(path).parent
        new = read_annotations(path, kind=kind, image_root=root)
        kind = kind or new[0].kind  # every file must hold the kind of the first
        for g in new:
            if g.id in roots:
                raise ValueError(f"{path}: annotation id {g.id!r} also appears in another file")
            roots[g.id] = root
        groups.extend(new)
    return groups, roots


def split_train_eval(cfg: RewardTrainConfig
                     ) -> tuple[list[AnnotationGroup], list[AnnotationGroup], dict[str, Path]]:
    """Training and held-out groups (a random split by image, or the eval files), and each
    group's image root."""
    groups, roots = load_groups(cfg)
    if cfg.eval_annotations:
        eval_groups, eval_roots = load_groups(cfg, cfg.eval_annotations, groups[0].kind)
        # by image (its path under its root), not id: a held-out image's other texts must not
        # be trained on either, and a file of more annotations can hold the held-out rows too
        held = {g.image for g in eval_groups}
        train_groups = [g for g in groups if g.image not in held]
        clash = sorted({g.id for g in train_groups} & {g.id for g in eval_groups})
        if clash:
            raise ValueError(f"{cfg.eval_annotations}: held-out id {clash[0]!r} is also a "
                             f"training id, on another image ({len(clash)} such ids)")
        log.info("held-out groups from %s; %d training groups of their images dropped",
                 cfg.eval_annotations, len(groups) - len(train_groups))
        roots = {**{g.id: roots[g.id] for g in train_groups}, **eval_roots}
    else:
        train_groups, eval_groups = split_groups(groups, cfg.eval_fraction, cfg.seed)
    if cfg.train_groups is not None:
        if cfg.train_groups < 1:
            raise ValueError(f"train_groups must be >= 1, got {cfg.train_groups}")
        train_groups = train_groups[:cfg.train_groups]
    if not train_groups:
        raise ValueError(f"{cfg.annotations}: no training groups left (every image held out)")
    return train_groups, eval_groups, roots


def distinct_sides(pairs: list[RewardPair], roots: dict[str, Path]
                   ) -> tuple[list[Any], list[int], list[int]]:
    """(items, better rows, worse rows): each distinct (image, text) of the pairs once, as a
    RewardInput, and each pair's two sides as rows of `items`. An annotation group of K
    candidates makes up to K(K-1)/2 pairs of K texts, so scoring the items, not the pairs'
    sides, reads each text once."""
    from mmalign.models.reward import RewardInput

    index: dict[tuple[str, str], int] = {}  # (image, text) -> its row
    sides: list[list[int]] = [[], []]
    for p in pairs:
        image = str(roots[p.group] / p.image)
        for side, text in zip(sides, (p.better, p.worse), strict=True):
            side.append(index.setdefault((image, text), len(index)))
    return [RewardInput([image], text) for image, text in index], sides[0], sides[1]


def held_out_scores(rm, pairs: list[RewardPair], roots: dict[str, Path],
                    batch_size: int) -> tuple[list[float], list[float]]:
    """The RM's scores of every pair's better and worse side, in pair order."""
    return HeldOutScorer(rm, pairs, roots, batch_size).scores()


class HeldOutScorer:
    """The held-out pairs' scores (each distinct text read once), before and after the fit:
    `scores()` as often as wanted. The likelihood readout's backbone is frozen, so its
    held-out features are read once (with LINE_FEATURES, minutes of generation) and only the
    head is applied again after the fit."""

    def __init__(self, rm, pairs: list[RewardPair], roots: dict[str, Path], batch_size: int):
        self.rm, self.batch_size = rm, batch_size
        self.items, self.better, self.worse = distinct_sides(pairs, roots)
        self._features = None

    def scores(self) -> tuple[list[float], list[float]]:
        if not self.items:
            return [], []
        if self.rm.readout != "likelihood":
            return _by_side(self.rm.score(self.items, self.batch_size), self.better, self.worse)
        if self._features is None:
            self._features = features_with_progress(self.rm, self.items, self.batch_size,
                                                    "held-out")
        return _by_side(self.rm.head_scores(self._features), self.better, self.worse)


def features_with_progress(rm, items: list[Any], batch_size: int, which: str):
    """rm.likelihood_features_of(items) read 1024 texts at a time, each logged (with the line
    features, minutes of generation per chunk on a CPU)."""
    from mmalign.models.reward import cat_padded

    chunks, chunk = [], 1024
    for start in range(0, len(items), chunk):
        chunks.append(rm.likelihood_features_of(items[start:start + chunk], batch_size))
        log.info("likelihood features (%s): %d of %d texts", which, start + len(chunks[-1]),
                 len(items))
    return cat_padded(chunks)  # chunks differ in their most lines


def _by_side(scores: list[float], better: list[int], worse: list[int]
             ) -> tuple[list[float], list[float]]:
    return [float(scores[i]) for i in better], [float(scores[i]) for i in worse]


def write_eval_scores(path: Path, better: list[float], worse: list[float]) -> None:
    """One line per held-out pair (eval_pairs.jsonl's order): the trained RM's two scores, so
    later measurements (per defect type, against another order) need no rescoring."""
    with open(path, "w", encoding="utf-8") as f:
        for b, w in zip(better, worse, strict=True):
            f.write(json.dumps({"better_score": round(b, 6), "worse_score": round(w, 6)}) + "\n")


def train_reward(cfg: RewardTrainConfig) -> dict[str, Any]:
    """Train, evaluate and save a reward model; return the report (also in report.json)."""
    import torch
    from transformers import TrainingArguments

    from mmalign.models.reward import (
        DEFAULT_LIKELIHOOD_FEATURES,
        VLMRewardModel,
        check_features,
        check_layout,
        check_likelihood_head,
        check_readout,
        pairwise_accuracy,
    )
    from mmalign.train.resume import resume_point

    check_readout(cfg.readout, "RewardTrainConfig.readout")  # before any reading or writing
    if cfg.likelihood_features is not None:
        check_features(cfg.likelihood_features, "RewardTrainConfig.likelihood_features")
    check_likelihood_head(cfg.likelihood_head, cfg.readout, "RewardTrainConfig.likelihood_head")
    if cfg.readout != "last" and cfg.layout != "turns":
        raise ValueError(f"the {cfg.readout} readout scores the text as the model's own "
                         f"answer: it needs layout='turns'")
    if cfg.readout == "likelihood" and (cfg.lora or cfg.freeze_vision_tower):
        raise ValueError("the likelihood readout never trains the backbone: lora and "
                         "freeze_vision_tower do not apply")
    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    train_groups, eval_groups, roots = split_train_eval(cfg)
    kind = train_groups[0].kind
    train_pairs, train_counts = build_pairs(train_groups, augment_rate=cfg.augment_rate,
                                            seed=cfg.seed)
    eval_pairs, eval_counts = build_pairs(eval_groups, augment_rate=0.0, seed=cfg.seed)
    if not train_pairs:
        raise ValueError(f"no training pairs in {cfg.annotations}: every group is a tie?")
    write_pairs(out / "train_pairs.jsonl", train_pairs)
    write_pairs(out / "eval_pairs.jsonl", eval_pairs)
    log.info("%s RM: %d train pairs (%d augmented) from %d groups, %d held-out pairs from %d",
             kind, len(train_pairs), train_counts["augmented"], len(train_groups),
             len(eval_pairs), len(eval_groups))

    if (Path(cfg.model) / "reward_config.json").is_file():
        rm = VLMRewardModel.from_pretrained(cfg.model, dtype=cfg.dtype)
        if rm.readout != cfg.readout:
            raise ValueError(f"{cfg.model}: a reward model with the {rm.readout!r} readout "
                             f"cannot continue with readout={cfg.readout!r}")
        if cfg.likelihood_features and tuple(cfg.likelihood_features) != rm.features:
            raise ValueError(f"{cfg.model}: a reward model reading {list(rm.features)} cannot "
                             f"continue with likelihood_features={cfg.likelihood_features}")
        if cfg.likelihood_head != rm.likelihood_head:
            raise ValueError(f"{cfg.model}: a reward model with the {rm.likelihood_head!r} "
                             f"head cannot continue with likelihood_head="
                             f"{cfg.likelihood_head!r}")
    else:
        rm = VLMRewardModel.from_backbone(cfg.model, dtype=cfg.dtype, seed=cfg.seed,
                                          readout=cfg.readout, beta=cfg.beta,
                                          head_hidden=cfg.head_hidden,
                                          features=(cfg.likelihood_features
                                                    or DEFAULT_LIKELIHOOD_FEATURES),
                                          line_reader=cfg.line_reader,
                                          likelihood_head=cfg.likelihood_head)
    rm.max_length = cfg.max_length
    rm.layout = check_layout(cfg.layout, "RewardTrainConfig.layout")
    rm.info = {"kind": kind, "annotations": [str(p) for p in cfg.annotations]}
    if cfg.lora:
        rm.enable_lora(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       target_modules=cfg.lora_target_modules)
    elif cfg.freeze_vision_tower:
        rm.freeze_vision_tower()

    held_out = HeldOutScorer(rm, eval_pairs, roots, cfg.eval_batch_size)
    acc_before = pairwise_accuracy(*held_out.scores())
    resume_from = None
    if rm.readout == "likelihood":  # no backbone training: no Trainer, nothing to resume
        fit = fit_likelihood_head(rm, train_pairs, roots, cfg)
        steps, train_loss, log_history = fit["steps"], fit["train_loss"], fit["log_history"]
    else:
        args = TrainingArguments(
            output_dir=str(out),
            num_train_epochs=cfg.num_train_epochs,
            max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
            weight_decay=cfg.weight_decay,
            logging_steps=cfg.logging_steps,
            report_to=cfg.report_to,
            seed=cfg.seed,
            save_strategy="steps" if cfg.save_steps > 0 else "no",
            save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
            save_total_limit=cfg.save_total_limit,
            remove_unused_columns=False,  # our collator needs the raw pair columns
            label_names=[],
            bf16=False,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
        )
        implicit = rm.readout == "implicit"
        if cfg.group_pairs:
            dataset = RewardGroupDataset(train_pairs, roots)
            collator = GroupCollator(rm.processor, cfg.max_length, rm.layout, implicit)
        else:
            dataset = RewardPairDataset(train_pairs, roots)
            collator = PairCollator(rm.processor, cfg.max_length, rm.layout, implicit)
        trainer = _trainer_class()(model=rm, args=args, train_dataset=dataset,
                                   data_collator=collator)
        resume_from = resume_point(out, cfg.resume)
        if resume_from:
            log.info("%s RM: resuming from %s", kind, resume_from)
        train_out = trainer.train(resume_from_checkpoint=resume_from)
        steps, train_loss = trainer.state.global_step, train_out.training_loss
        log_history = trainer.state.log_history
    better, worse = held_out.scores()
    acc_after = pairwise_accuracy(better, worse)
    write_eval_scores(out / "eval_scores.jsonl", better, worse)

    final = rm.save_pretrained(out / "final")
    losses = [e["loss"] for e in log_history if "loss" in e]
    report = {
        "kind": kind,
        "model": cfg.model,
        "final": str(final),
        "groups": {"train": len(train_groups), "eval": len(eval_groups)},
        "pairs": {"train": train_counts, "eval": eval_counts},
        "steps": steps,
        "train_loss": train_loss,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "eval_pairwise_accuracy_before": _round(acc_before),
        "eval_pairwise_accuracy": _round(acc_after),
        "lora": cfg.lora,
        "layout": rm.layout,
        "readout": rm.readout,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "seconds": round(time.time() - t0, 1),
    }
    (final / "train_log.json").write_text(json.dumps(log_history, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s RM held-out pairwise accuracy %.3f (before training %.3f)", kind,
             acc_after, acc_before)
    return report


def fit_likelihood_head(rm, pairs: list[RewardPair], roots: dict[str, Path],
                        cfg: RewardTrainConfig) -> dict[str, Any]:
    """The likelihood readout's training. The backbone is frozen, so each distinct training
    text's features are computed once; the head (standardisation from those features, then
    the MLP) is fitted on them with the pairwise loss, `max_steps` steps (default: the
    epochs over the pairs) of `per_device_train_batch_size` pairs drawn at random."""
    import torch

    from mmalign.models.reward import pairwise_loss

    items, better_rows, worse_rows = distinct_sides(pairs, roots)
    head = rm.head
    feats = features_with_progress(rm, items, cfg.eval_batch_size, "training").to(
        head.feature_mean.device)
    better, worse = torch.tensor(better_rows), torch.tensor(worse_rows)
    with torch.no_grad():
        head.standardise(feats)
    batch = cfg.per_device_train_batch_size
    steps = (cfg.max_steps if cfg.max_steps > 0
             else max(1, math.ceil(cfg.num_train_epochs * len(pairs) / batch)))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.learning_rate,
                            weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    head.train()
    history, window = [], []
    for step in range(1, steps + 1):
        pick = torch.randint(len(pairs), (batch,), generator=gen)
        loss = pairwise_loss(head(feats[better[pick]]), head(feats[worse[pick]]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append(float(loss.detach()))
        if step % cfg.logging_steps == 0 or step == steps:
            history.append({"loss": sum(window) / len(window), "step": step})
            window = []
    head.eval()
    return {"steps": steps, "train_loss": sum(e["loss"] for e in history) / len(history),
            "log_history": history, "texts": len(items)}


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)
