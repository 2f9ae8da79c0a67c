"""POVID in miniature (DESIGN 6.2): do AI-generated dispreferences cut hallucination, and do
the two negative sources together beat either alone? On the synthetic world, from one SFT
model, four variants, each evaluated on POPE (random / popular / adversarial F1), CHAIR_i,
CHAIR_s and VQA, over several seeds:

    sft     the starting model itself, no preference training (`base`, or `base` after
            `sft_steps` of SFT on the world's corpus.json and `sft_mix`); evaluated once:
            greedy decoding is deterministic, so every seed would give the same numbers.
    stage1  POVID stage 1 alone: plain DPO (`train_preference`, noise_term=False) on the text
            negatives, chosen = the ground-truth answer from corpus_clean.json, rejected = the
            lexical injector's hallucinated version of it. `steps` steps.
    noise   the stage-2 noise term alone: `train_preference` with noise_term=True,
            text_weight=0, noise_weight=`noise_only_weight` (1.0: the same loss scale as plain
            DPO), from the SFT model. Rejected = the policy's own argmax answer under the
            diffusion-noised image (t = `noise_step`), scored under the clean image. The text
            negatives are still in the batches (the trainer needs pairs and their reference
            log-probs) but carry weight 0, so they give no gradient. `steps` steps.
    both    POVID's schedule (`train_povid`): stage 1 as above, LoRA merged, then stage 2 =
            text_weight * DPO(text negative) + noise_weight * DPO(noise negative) from the
            merged model, whose reference is the merged stage-1 model. `both_steps` steps per
            stage (default `steps`, as POVID runs each stage in full, so `both` trains twice as
            long as the others; `both_steps=<steps // 2>` compares at an equal step budget).

Every trained variant uses the same pairs, LoRA (r = `lora_r`, merged into final/), beta, lr
and batch size; the seed sets the data order, the LoRA initialisation and the image noise.

    .venv/bin/python bench/povid.py recipes/povid.yaml [key=value ...]

Settings live in the recipe (the `PovidExperiment` fields below; an unknown key is an error),
`key=value` overrides win. Output under `out`: pairs/ (the injected pairs + manifest),
ref_logps/ (reference log-probs shared by every run), eval<limit>-sft/, <variant>-s<seed>/
(training output, run.json = its settings, seconds.json, eval<limit>/), povid.md (the table:
mean with min-max over seeds, and each variant minus sft) and povid.json. Every step resumes:
a training run whose final model exists is skipped (a run folder trained with other settings
is an error, not silently reused), evaluation is resumable, so rerunning the command after an
interruption only does what is missing.

Cost (recipe defaults, tiny-base, 2 busy CPU cores): a stage-1 step ~1 s, a noise-term step
~2 s (three more forward passes: policy and reference on the noisy image, reference on the
clean one), an evaluation of 100 images ~30 s; 3 seeds come to ~20 minutes.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmalign.config import RecipeError
from mmalign.experiments import (
    HALLUCINATION_COLUMNS,
    check_settings,
    ensure_world,
    evaluate_model,
    load_settings,
    mix_files,
    recipe_main,
    repo_path,
    show_row,
    summarise,
    write_results,
)

VARIANTS = ("sft", "stage1", "noise", "both")
log = logging.getLogger("povid")


@dataclass
class PovidExperiment:
    """Settings of the miniature POVID experiment (recipes/povid.yaml). Relative paths are
    taken from the current folder, then from the repository root."""

    world: str = "runs/base/world"  # world folder; made (WorldConfig seed `world_seed`) if absent
    world_seed: int = 0  # only used to make a missing world (0: the tiny-base's world)
    base: str = "checkpoints/tiny-base"  # the starting model (instruction-tuned already)
    out: str = "runs/povid"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))

    # --- optional SFT of `base` before everything (0: use `base` as the SFT model)
    sft_steps: int = 0
    sft_data: str = "corpus.json"  # inside the world folder
    sft_mix: list[str] = field(default_factory=list)  # more world files, e.g. [clean.json]:
    # the short-answer rest of a LLaVA-1.5-style mix (alone, 250 steps on the machine-voice
    # corpus wreck the tiny base: POPE ~0.5, VQA 0; docs/results.md, defect gap)
    sft_lr: float = 2e-4
    sft_batch_size: int = 32

    # --- stage-1 pairs: ground truth vs the lexical injector's hallucinated version
    corpus: str = "corpus_clean.json"  # inside the world folder: defect-free answers
    pairs: int = 384  # pairs drawn (seeded by pair_seed) from every injected answer
    pair_seed: int = 0
    injection_types: list[str] = field(default_factory=lambda: ["all"])
    edits: int = 1  # hallucinations per rejected answer
    turns: str = "last"  # corrupt each sample's last answer, or "all" of them
    object_evidence: str = "absent"  # absent | unmentioned (see pairs/inject.py)

    # --- preference training (PreferenceRunConfig fields of the same meaning)
    steps: int = 48  # optimiser steps per run (per stage for `both`, see both_steps)
    both_steps: int | None = None  # per stage of `both`; default: steps
    batch_size: int = 8
    lr: float = 2e-4
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int | None = None  # default 2 * lora_r
    max_length: int = 512
    noise_step: int = 500  # diffusion step t of 1000 (POVID: 500)
    noise_ref_mode: str = "faithful"  # faithful (POVID's code) | shared
    text_weight: float = 0.5  # `both`, stage 2: weight of DPO(chosen, text negative)
    noise_weight: float = 0.5  # `both`, stage 2: weight of DPO(chosen, noise negative)
    noise_only_weight: float = 1.0  # `noise`: weight of its only term

    # --- evaluation
    benches: list[str] = field(default_factory=lambda: ["pope", "chair", "vqa"])
    eval_limit: int | None = 100  # benchmark images (null: all)
    eval_batch_size: int = 32
    device: str | None = None  # evaluation device; default cuda if available, else cpu

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise RecipeError(f"variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
        if not self.seeds:
            raise RecipeError("seeds: at least one seed")
        if self.steps < 1 or (self.both_steps is not None and self.both_steps < 1):
            raise RecipeError("steps and both_steps must be >= 1")
        if self.pairs < 1:
            raise RecipeError("pairs must be >= 1")


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                    ) -> PovidExperiment:
    """The recipe file with `key=value` overrides applied, typed strictly (an unknown key is a
    RecipeError naming the file and the key)."""
    exp = load_settings(PovidExperiment, path, overrides)
    exp.validate()
    return exp


# ---------------------------------------------------------------------- the pieces



def sft_model(exp: PovidExperiment, world: Path, out: Path) -> Path:
    """The starting model: `base` itself, or `base` after `sft_steps` of full SFT."""
    base = repo_path(exp.base)
    if exp.sft_steps <= 0:
        return base
    from mmalign.train.sft import SFTRunConfig, train_sft

    cfg = SFTRunConfig(
        model=str(base), data=[str(world / exp.sft_data), *mix_files(world, exp.sft_mix, out)],
        image_root=str(world),
        output_dir=str(out / "sft"), max_steps=exp.sft_steps,
        per_device_train_batch_size=exp.sft_batch_size, learning_rate=exp.sft_lr, seed=0,
        save_steps=max(50, exp.sft_steps // 4))
    final = out / "sft" / "final"
    check_settings(out / "sft" / "run.json", asdict(cfg))
    if (final / "train_log.json").is_file():
        return final
    return train_sft(cfg)


def pairs_settings(exp: PovidExperiment, world: Path) -> dict[str, Any]:
    """What makes the pairs file: a run trained on other pairs is another experiment."""
    return {"corpus": str(world / exp.corpus), "pairs": exp.pairs, "pair_seed": exp.pair_seed,
            "types": exp.injection_types, "edits": exp.edits, "turns": exp.turns,
            "object_evidence": exp.object_evidence}


def make_pairs(exp: PovidExperiment, world: Path, out: Path) -> Path:
    """OUT/pairs/pairs.jsonl: `pairs` (chosen = ground truth, rejected = injected) drawn from
    the lexical injector's output over the whole clean corpus (the injector reads every answer
    about an image as its evidence, so it sees the whole corpus even when few pairs are kept).
    Reused while the settings that made it are unchanged."""
    from mmalign.io.atomic import write_json
    from mmalign.io.formats import read_records, write_records
    from mmalign.pairs.inject import LexicalInjector, inject_hallucinations
    from mmalign.pairs.lexicon import Lexicon, fit_lexicon

    folder = out / "pairs"
    target, manifest = folder / "pairs.jsonl", folder / "manifest.json"
    settings = pairs_settings(exp, world)
    if target.is_file() and manifest.is_file() \
            and json.loads(manifest.read_text()).get("settings") == settings:
        return target
    samples = read_records(world / exp.corpus, image_root=world)
    lexicon = fit_lexicon(samples, Lexicon.default())
    injector = LexicalInjector(lexicon, types=exp.injection_types, edits=exp.edits,
                               seed=exp.pair_seed, object_evidence=exp.object_evidence)
    result = inject_hallucinations(samples, injector, turns=exp.turns)
    if len(result.pairs) < exp.pairs:
        raise ValueError(f"the injector made {len(result.pairs)} pairs from {exp.corpus}, "
                         f"fewer than pairs={exp.pairs}")
    chosen = random.Random(exp.pair_seed).sample(result.pairs, exp.pairs)
    write_records(target, chosen, "jsonl")
    write_json(manifest, {"settings": settings, "injection": result.counts,
                          "kept": len(chosen)})
    log.info("pairs: %d of %d injected answers (%s)", len(chosen), result.counts["pairs"],
             result.counts["by_type"])
    return target


def preference_config(exp: PovidExperiment, variant: str, seed: int, start: Path,
                      pairs: Path, world: Path, run: Path, cache: Path):
    """The PreferenceRunConfig of one trained variant (see the module docstring)."""
    from mmalign.train.preference import PreferenceRunConfig

    cfg = PreferenceRunConfig(
        model=str(start), data=[str(pairs)], output_dir=str(run), image_root=str(world),
        beta=exp.beta, noise_step=exp.noise_step, noise_ref_mode=exp.noise_ref_mode,
        text_weight=exp.text_weight, noise_weight=exp.noise_weight, ref_cache_dir=str(cache),
        max_steps=exp.steps, per_device_train_batch_size=exp.batch_size,
        learning_rate=exp.lr, max_length=exp.max_length, lora_r=exp.lora_r,
        lora_alpha=exp.lora_alpha or 2 * exp.lora_r, seed=seed,
        logging_steps=max(1, min(10, exp.steps // 4)), save_steps=max(25, exp.steps // 2))
    if variant == "stage1":
        return replace(cfg, noise_term=False)
    if variant == "noise":
        return replace(cfg, noise_term=True, text_weight=0.0,
                       noise_weight=exp.noise_only_weight)
    if variant == "both":  # train_povid sets noise_term per stage itself
        return replace(cfg, max_steps=exp.both_steps or exp.steps)
    raise ValueError(f"{variant!r} is not a trained variant")



def train_variant(variant: str, cfg, pairs_settings: dict[str, Any]) -> Path:
    """Train one variant into cfg.output_dir, or return its final model when it exists."""
    from mmalign.train.preference import train_povid, train_preference

    run = Path(cfg.output_dir)
    final = run / ("stage2" if variant == "both" else "") / "final"
    check_settings(run / "run.json", {"variant": variant, **asdict(cfg),
                                      "pairs_settings": pairs_settings})
    if (final / "train_log.json").is_file():
        log.info("%s: done already (%s)", run.name, final)
        return final
    t0 = time.time()
    final = (train_povid if variant == "both" else train_preference)(cfg)
    (run / "seconds.json").write_text(json.dumps({"train": round(time.time() - t0, 1)}) + "\n")
    return final


# ---------------------------------------------------------------------- the experiment


def run_experiment(exp: PovidExperiment) -> tuple[dict[str, list[dict]], str]:
    """Train and evaluate every (variant, seed); return the results and the markdown table."""
    import torch

    exp.validate()
    device = exp.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(exp.out)
    out.mkdir(parents=True, exist_ok=True)
    world = ensure_world(exp.world, exp.world_seed, exp.corpus, log.info)
    start = sft_model(exp, world, out)
    trained = [v for v in VARIANTS if v in exp.variants and v != "sft"]
    pairs = make_pairs(exp, world, out) if trained else None

    def evaluate(model: Path, folder: Path) -> dict:
        return evaluate_model(model, world, folder, exp.benches, exp.eval_limit,
                              batch_size=exp.eval_batch_size, device=device, log=log.info)

    results: dict[str, list[dict]] = {}
    if "sft" in exp.variants:
        results["sft"] = [evaluate(start, out / "eval-sft")]
        show_row("sft", None, results["sft"][-1])
    for variant in trained:
        results[variant] = []
        for seed in exp.seeds:
            run = out / f"{variant}-s{seed}"
            cfg = preference_config(exp, variant, seed, start, pairs, world, run,
                                    out / "ref_logps")
            final = train_variant(variant, cfg, pairs_settings(exp, world))
            results[variant].append(evaluate(final, run / "eval"))
            show_row(variant, seed, results[variant][-1])

    table = summarise(results, HALLUCINATION_COLUMNS, reference="sft" if "sft" in results
                      else None)
    write_results(out, "povid", asdict(exp), results, table)
    return results, table


def main(argv: list[str] | None = None) -> int:
    return recipe_main(sys.argv[1:] if argv is None else argv, __doc__,
                       lambda recipe, overrides: run_experiment(
                           load_experiment(recipe, overrides))[1])


if __name__ == "__main__":
    sys.exit(main())
