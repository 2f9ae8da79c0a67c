"""MM-DPO in miniature (DESIGN 6.3): four alignment algorithms on the same rated self-samples.

    .venv/bin/python bench/mmdpo.py recipes/mmdpo.yaml [key=value ...]

From one starting model, on the synthetic world:
  1. prompts: N single-turn (image, question) items of the world's clean instruction corpus
     (`corpus_clean.json`), the same number from each category (conversation, detail,
     reasoning); their answers there are the dataset's reference answers;
  2. sample K answers per prompt from the starting model (`mmalign.pairs.sample`);
  3. rate every answer 0-4 on the five attributes with the oracle judge (scene graphs);
  4. train, per seed, from the starting model:
       sft        SFT on the reference answers of the N prompts;
       rejection  SFT on the best-rated sample of each prompt (`best_of_k`);
       dpo        our preference trainer on pairs from the ratings (MM-DPO's pair rule);
       steerlm    SFT on every rated sample, its question carrying the answer's own ratings
                  (`train.steerlm.training_prompt`); evaluated with the target ratings
                  (`steer_target`) appended to every benchmark question;
     the three SFT-type algorithms see the same number of samples (steps x batch);
  5. evaluate the starting model and every trained one on POPE, VQA, MC (CircularEval) and
     the open-ended answers rated by the oracle (`eval/open.py`).
Sampling and rating happen once, whatever the seeds. Every step resumes: sampling and rating
skip what their files hold, a training run whose final model exists is not run again (one
trained with other settings or data is refused), evaluation only does what metrics.json lacks.

Output under `out`: data/ (prompts.jsonl = sft's data, samples.jsonl, ratings.jsonl,
dpo_pairs.jsonl, rejection.jsonl, steerlm.jsonl, summary.json), ref_logps/ (DPO's reference
log-probs, shared by the seeds), eval-base/, <algorithm>-s<seed>/ (training output, run.json,
eval/), mmdpo.md (the table: mean (min-max) over seeds, each algorithm minus base, and what
the data held), mmdpo.json (every run's numbers) and mmdpo_data.json (data counts, timings).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmalign.config import RecipeError
from mmalign.experiments import (
    check_settings,
    evaluate_model,
    load_settings,
    recipe_main,
    repo_path,
    summarise,
    write_results,
)
from mmalign.io.images import image_hash
from mmalign.records import RATING_ATTRIBUTES, Rating, Sample, Turn

ALGORITHMS = ("sft", "rejection", "dpo", "steerlm")
CATEGORIES = ("conversation", "detail", "reasoning")


# --------------------------------------------------------------------------- the recipe


@dataclass
class SampleSection:
    """Drawing K answers per prompt from the starting model (`pairs.sample.SampleConfig`)."""

    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 96  # the world's longest reference answer is 85 tokens
    batch_size: int = 32  # requests per generate call
    seed: int = 0


@dataclass
class PairSection:
    """MM-DPO's pair rule (`pairs.rated.PairRule`) and the seed of its random draws."""

    quality_attributes: list[str] = field(
        default_factory=lambda: ["helpfulness", "correctness", "coherence"])
    min_gap: float = 2.0
    reject_margin: float = 2.0
    seed: int = 0


@dataclass
class SFTSection:
    """Shared by sft, rejection and steerlm: the same samples seen (steps x batch_size)."""

    steps: int = 60
    batch_size: int = 32
    lr: float = 2e-4


@dataclass
class DPOSection:
    steps: int = 60
    batch_size: int = 8  # pairs per step
    lr: float = 5e-5
    beta: float = 0.1
    sft_weight: float = 0.0  # weight of the chosen answers' NLL added to the DPO loss
    lora: bool = False  # false: all weights but the vision tower, as SFT trains them


@dataclass
class EvalSection:
    benches: list[str] = field(default_factory=lambda: ["pope", "vqa", "mc", "open"])
    limit: int | None = 100  # benchmark images
    batch_size: int = 32


@dataclass
class MMDPOConfig:
    out: str = "runs/mmdpo"
    # A world folder; made with `world_config` (WorldConfig fields) when it does not exist.
    world: str = "runs/mmdpo/world"
    world_config: dict[str, Any] = field(default_factory=dict)
    base: str = "checkpoints/tiny-base"  # the starting model of every algorithm
    prompts: int = 300  # split evenly over `categories`
    prompt_file: str = "corpus_clean.json"  # relative to the world
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    prompt_seed: int = 0  # which records of each category are drawn
    judge_noise: float = 0.0  # the oracle's annotator noise (std of a 0-4 rating)
    sample: SampleSection = field(default_factory=SampleSection)
    pairs: PairSection = field(default_factory=PairSection)
    sft: SFTSection = field(default_factory=SFTSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    # SteerLM's ratings asked for at inference (0-4 each); default: the best on every one.
    steer_target: dict[str, int] = field(
        default_factory=lambda: {a: 4 for a in RATING_ATTRIBUTES})
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval: EvalSection = field(default_factory=EvalSection)
    device: str = "cpu"  # sampling and evaluation (training takes a GPU when there is one)
    logging_steps: int = 10

    def check(self) -> None:
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown:
            raise RecipeError(f"algorithms: unknown {unknown} (known: {', '.join(ALGORITHMS)})")
        bad = set(self.steer_target) - set(RATING_ATTRIBUTES)
        if bad or any(not 0 <= v <= 4 for v in self.steer_target.values()):
            raise RecipeError(f"steer_target: attributes among {RATING_ATTRIBUTES}, values 0-4 "
                              f"(got {self.steer_target})")
        if not self.seeds or self.prompts < len(self.categories):
            raise RecipeError("need at least one seed and one prompt per category")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> MMDPOConfig:
    """The recipe file with `key.sub=value` overrides applied, typed strictly (an unknown key
    is a RecipeError naming the file and the key)."""
    cfg = load_settings(MMDPOConfig, path, overrides)
    cfg.check()
    world_config(cfg, source=str(path))  # typed now, so a bad key fails before any work
    return cfg


def world_config(cfg: MMDPOConfig, source: str = "<recipe>"):
    from mmalign.config import to_dataclass
    from mmalign.world.make import WorldConfig

    return to_dataclass(WorldConfig, cfg.world_config, where="world_config", source=source)



# --------------------------------------------------------------------------- SteerLM at inference


def steer_target(cfg: MMDPOConfig) -> dict[str, int]:
    """The ratings SteerLM asks for: `steer_target` over 4 on every attribute."""
    from mmalign.train.steerlm import DEFAULT_TARGET

    return DEFAULT_TARGET | cfg.steer_target


class SteeredGenerator:
    """A Generator that appends SteerLM's attribute string (the target ratings) to the last
    user turn of every request before handing it to `inner`."""

    def __init__(self, inner, target: dict[str, int]):
        self.inner = inner
        self.target = dict(target)
        values = ",".join(str(self.target[a]) for a in RATING_ATTRIBUTES)
        self.name = f"{inner.name}+steer({values})"

    def generate(self, requests):
        from mmalign.train.steerlm import inference_prompt

        return self.inner.generate([replace(r, messages=inference_prompt(r.messages, self.target))
                                    for r in requests])


# --------------------------------------------------------------------------- data


def select_prompts(world: Path, cfg: MMDPOConfig) -> list[Sample]:
    """N single-turn samples (first question and its answer) of the prompt file, the same
    number per category (earlier categories take the remainder), drawn with `prompt_seed`."""
    import numpy as np

    from mmalign.io.formats import read_records

    by_category: dict[str, list[Sample]] = {c: [] for c in cfg.categories}
    for rec in read_records(world / cfg.prompt_file, image_root=world):
        if isinstance(rec, Sample) and rec.category in by_category and len(rec.turns) >= 2 \
                and rec.turns[0].role == "user" and rec.turns[1].role == "assistant":
            by_category[rec.category].append(rec)
    rng = np.random.default_rng(cfg.prompt_seed)
    out = []
    for i, (c, recs) in enumerate(by_category.items()):
        n = cfg.prompts // len(cfg.categories) + (i < cfg.prompts % len(cfg.categories))
        if len(recs) < n:
            raise ValueError(f"{cfg.prompt_file}: {len(recs)} {c} records, {n} wanted")
        for j in sorted(rng.permutation(len(recs))[:n]):
            s = recs[j]
            out.append(Sample(id=s.id, images=list(s.images), turns=list(s.turns[:2]),
                              category=c, source="mmdpo/prompt", meta={"from": cfg.prompt_file}))
    return out


def steer_samples(rows: list[dict[str, Any]]) -> list[Sample]:
    """SteerLM's data: every rated answer, its question carrying the answer's own ratings."""
    from mmalign.train.steerlm import training_prompt

    out = []
    for row in rows:
        prompt = [Turn(t["role"], t["content"]) for t in row["prompt"]]
        for d in row["ratings"]:
            r = Rating.from_dict(d)
            if r.error or any(a not in r.scores for a in RATING_ATTRIBUTES):
                continue
            out.append(Sample(id=f"{row['id']}-k{r.response_index}",
                              images=list(row["images"]),
                              turns=training_prompt(prompt, r.scores)
                              + [Turn("assistant", r.response)],
                              category=row.get("category") or "other", source="mmdpo/steerlm",
                              meta={"scores": r.scores}))
    return out


def mean_quality(rows: list[dict[str, Any]], attrs: list[str]) -> float:
    q = [sum(d["scores"][a] for a in attrs) for row in rows for d in row["ratings"]
         if not d.get("error")]
    return sum(q) / len(q) if q else float("nan")


def build_data(cfg: MMDPOConfig, world: Path, base: Path, data: Path, log) -> dict[str, Any]:
    """Prompts, samples, ratings and the four training files under `data` (seed-independent;
    sampling and rating resume, the derived files are rewritten, cheaply, every time)."""
    from mmalign.backends.hf import HFGenerator
    from mmalign.backends.judge import judge_file
    from mmalign.backends.oracle import OracleJudge
    from mmalign.io.formats import write_records
    from mmalign.io.journal import read_journal
    from mmalign.pairs.rated import PairRule, best_of_k, rated_pairs
    from mmalign.pairs.sample import SampleConfig, sample_answers

    data.mkdir(parents=True, exist_ok=True)
    prompts = select_prompts(world, cfg)
    write_records(data / "prompts.jsonl", prompts, "jsonl")

    t = time.time()
    s = cfg.sample
    scfg = SampleConfig(k=s.k, temperature=s.temperature, top_p=s.top_p,
                        max_new_tokens=s.max_new_tokens, seed=s.seed, batch_size=s.batch_size)
    gen = HFGenerator.from_pretrained(base, batch_size=s.batch_size, device=cfg.device)
    counts = sample_answers(gen, data / "prompts.jsonl", data / "samples.jsonl", scfg,
                            image_root=world, strict=True, progress=False)
    del gen
    log(f"sampled {counts['sampled_now']} prompts x {s.k} ({counts['already_done']} done "
        f"before) in {time.time() - t:.0f}s")

    t = time.time()
    judge = OracleJudge(world, noise=cfg.judge_noise, seed=s.seed)
    judged = judge_file(judge, data / "samples.jsonl", data / "ratings.jsonl", image_root=world,
                        batch_size=64, progress=False)
    if judged["failed"]:
        raise RuntimeError(f"the oracle failed on {judged['failed']} answers; see "
                           f"{data / 'ratings.jsonl'}")
    log(f"rated {judged['ratings']} answers in {time.time() - t:.1f}s")

    rows = read_journal(data / "ratings.jsonl")
    rule = PairRule(quality_attributes=tuple(cfg.pairs.quality_attributes),
                    min_gap=cfg.pairs.min_gap, reject_margin=cfg.pairs.reject_margin)
    pairs, stats = rated_pairs(rows, rule, seed=cfg.pairs.seed, where="ratings.jsonl")
    best = best_of_k(rows, rule, seed=cfg.pairs.seed, where="ratings.jsonl")
    steer = steer_samples(rows)
    if "dpo" in cfg.algorithms and not pairs:
        raise RuntimeError(f"no preference pairs from {len(rows)} groups ({stats.to_dict()}); "
                           f"more prompts, a higher temperature or a smaller pairs.min_gap")
    write_records(data / "dpo_pairs.jsonl", pairs, "jsonl")
    write_records(data / "rejection.jsonl", best, "jsonl")
    write_records(data / "steerlm.jsonl", steer, "jsonl")

    attrs = list(rule.quality_attributes)
    summary = {
        "prompts": len(prompts),
        "per_category": {c: sum(p.category == c for p in prompts) for c in cfg.categories},
        "answers": judged["ratings"], "pair_rule": stats.to_dict(),
        "best_of_k": len(best), "steerlm_samples": len(steer),
        "mean_quality_samples": mean_quality(rows, attrs),
        "mean_quality_best": (sum(b.meta["quality"] for b in best) / len(best)
                              if best else float("nan")),
    }
    (data / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# --------------------------------------------------------------------------- training



def run_config(algo: str, seed: int, cfg: MMDPOConfig, world: Path, base: Path, data: Path,
               run: Path):
    """The trainer's config of one (algorithm, seed) run from the starting model."""
    if algo == "dpo":
        from mmalign.train.preference import PreferenceRunConfig

        d = cfg.dpo
        return PreferenceRunConfig(
            model=str(base), data=[str(data / "dpo_pairs.jsonl")], output_dir=str(run),
            image_root=str(world), beta=d.beta, sft_weight=d.sft_weight,
            ref_cache_dir=str(Path(cfg.out) / "ref_logps"), max_steps=d.steps,
            per_device_train_batch_size=d.batch_size, learning_rate=d.lr, lora=d.lora,
            seed=seed, logging_steps=cfg.logging_steps, save_steps=max(50, d.steps // 2))
    from mmalign.train.sft import SFTRunConfig

    files = {"sft": "prompts.jsonl", "rejection": "rejection.jsonl", "steerlm": "steerlm.jsonl"}
    s = cfg.sft
    return SFTRunConfig(
        model=str(base), data=[str(data / files[algo])], output_dir=str(run),
        image_root=str(world), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.lr, seed=seed, logging_steps=cfg.logging_steps,
        save_steps=max(50, s.steps // 2))


def train(algo: str, run_cfg, data_hash: str) -> Path:
    """Train one run, or return its final model when it exists (trained with the same
    settings and data; anything else is refused)."""
    run = Path(run_cfg.output_dir)
    check_settings(run / "run.json", asdict(run_cfg) | {"data_sha256": data_hash})
    final = run / "final"
    if (final / "train_log.json").is_file():
        return final
    if algo == "dpo":
        from mmalign.train.preference import train_preference

        return train_preference(run_cfg)
    from mmalign.train.sft import train_sft

    return train_sft(run_cfg)


# --------------------------------------------------------------------------- the experiment


def ensure_world(cfg: MMDPOConfig, log) -> Path:
    """The world folder; made with `world_config` when it is not there."""
    world = repo_path(cfg.world)
    if not (world / "manifest.json").is_file():
        from mmalign.world.make import make_world

        t = time.time()
        make_world(world, world_config(cfg), log=lambda _: None)
        log(f"made the world {world} in {time.time() - t:.0f}s")
    if "open" in cfg.eval.benches:  # a world made before the open task: say so before any work
        from mmalign.eval.run import read_bench
        from mmalign.eval.tasks import get_task

        task = get_task("open")
        try:
            task.build_items(read_bench(world, task)[:1])
        except ValueError as e:
            raise RecipeError(f"world={world}: {e}") from None
    return world


def run_experiment(cfg: MMDPOConfig, *, log=print) -> dict[str, Any]:
    """The whole comparison (resumable); returns {results, table, summary, timings}."""
    out = Path(cfg.out)
    world = ensure_world(cfg, log)
    base = repo_path(cfg.base)
    data = out / "data"
    t0 = time.time()
    summary = build_data(cfg, world, base, data, log)
    log("data: " + json.dumps(summary))
    timings: dict[str, float] = {"data": time.time() - t0}

    e = cfg.eval

    def evaluate(model: Path, where: Path, wrap=None) -> dict:
        return evaluate_model(model, world, where, e.benches, e.limit, e.batch_size,
                              device=cfg.device, wrap=wrap)

    t = time.time()
    results: dict[str, list[dict]] = {"base": [evaluate(base, out / "eval-base")]}
    timings["eval base"] = time.time() - t
    for algo in cfg.algorithms:
        results[algo] = []
        wrap = (lambda g: SteeredGenerator(g, steer_target(cfg))) if algo == "steerlm" else None
        for seed in cfg.seeds:
            run = out / f"{algo}-s{seed}"
            run_cfg = run_config(algo, seed, cfg, world, base, data, run)
            t = time.time()
            final = train(algo, run_cfg, image_hash(run_cfg.data[0]))  # sha256 of any file
            timings[f"train {algo} s{seed}"] = time.time() - t
            t = time.time()
            results[algo].append(evaluate(final, run / "eval", wrap))
            timings[f"eval {algo} s{seed}"] = time.time() - t
            log(f"{algo} seed {seed}: " + ", ".join(
                f"{b} {k} {v:.3f}" for (b, k), v in results[algo][-1].items()))

    table = summarise(results, list(results["base"][0]), reference="base")
    q = summary["pair_rule"]
    notes = (f"\n\n{summary['prompts']} prompts x {cfg.sample.k} samples "
             f"(T={cfg.sample.temperature}, top_p={cfg.sample.top_p}) from {cfg.base}, rated "
             f"by the oracle: mean quality {summary['mean_quality_samples']:.2f} (best of K "
             f"{summary['mean_quality_best']:.2f}); {q['pairs']} DPO pairs "
             f"({q['skipped_small_gap']} groups skipped for a small gap, "
             f"{q['skipped_no_rejected']} without a rejected answer); rejection sampling "
             f"{summary['best_of_k']} samples; SteerLM {summary['steerlm_samples']} samples, "
             f"evaluated asking for "
             + ",".join(f"{a}={v}" for a, v in steer_target(cfg).items())
             + f". Seeds {cfg.seeds}; eval limit {e.limit} images.")
    args = {k: json.dumps(v) for k, v in asdict(cfg).items()}
    write_results(out, "mmdpo", args, results, table + notes)
    (out / "mmdpo_data.json").write_text(json.dumps(
        {"summary": summary, "timings_s": timings}, indent=1) + "\n")
    return {"results": results, "table": table + notes, "summary": summary, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    return recipe_main(sys.argv[1:] if argv is None else argv, __doc__,
                       lambda recipe, overrides: run_experiment(
                           load_config(recipe, overrides),
                           log=lambda m: print(m, flush=True))["table"])


if __name__ == "__main__":
    sys.exit(main())
