"""`mmalign curate ...`: Align2LLaVA curation (reward models, scoring, selection, rewriting).

    mmalign curate reward  --model M --annotations world/annotations/answers.jsonl \\
                           --image-root world --out rm_answer
    mmalign curate score   --data world/corpus.json --question-rm rm_question/final \\
                           --answer-rm rm_answer/final --out run/score
    mmalign curate select  --scored run/score --out run/select            # cascade 0.3 / 0.3
    mmalign curate rewrite --data run/select/selected.jsonl --model M --world world \\
                           --out run/rewrite
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

curate_app = typer.Typer(no_args_is_help=True)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


_ERRORS = (ValueError, FileNotFoundError, RuntimeError)  # RecordError is a ValueError


@curate_app.command("reward")
def reward(
    model: str = typer.Option(..., "--model", help="Backbone VLM: folder or hub id."),
    annotations: list[Path] = typer.Option(..., "--annotations",
                                           help="Annotation file(s), all of one kind."),
    out: Path = typer.Option(..., "--out", help="Output folder (final/ holds the model)."),
    kind: str = typer.Option(None, help="question or answer (default: from the files)."),
    image_root: Path = typer.Option(None, help="Image root (default: each file's folder)."),
    eval_fraction: float = typer.Option(0.1, help="Share of images held out for accuracy."),
    eval_annotations: list[Path] = typer.Option(
        None, "--eval-annotations", help="Held-out groups from these files instead of a random "
        "split (a fixed test set); training groups of their images are dropped."),
    train_groups: int = typer.Option(None, help="Train on the first N training groups only "
                                     "(learning curves; the held-out set is unchanged)."),
    augment_rate: float = typer.Option(0.25, help="Corruption pairs per candidate (paper)."),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int = typer.Option(-1, help="> 0 overrides --epochs."),
    batch_size: int = typer.Option(8, "--batch-size",
                                   help="Pairs (groups with --group-pairs) per step and device."),
    group_pairs: bool = typer.Option(
        False, "--group-pairs", help="Batch by annotation group, every pair of it, each text "
        "encoded once (InstructGPT)."),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(2e-5, "--lr"),
    max_length: int = typer.Option(None, help="Cut longer inputs (never image tokens)."),
    layout: str = typer.Option(
        "user", help="user: the text in the user turn (the paper's); turns: the scored text as "
        "the assistant's turn after the image (and the question)."),
    readout: str = typer.Option(
        "last", help="last: a scalar head at the last token (the paper's); implicit: "
        "beta * (log pi - log pi_ref) of the scored text, trained as DPO; likelihood: an MLP "
        "over the frozen backbone's token log-prob statistics, fitted on features computed "
        "once (--max-steps, --batch-size, --lr are the fit's: e.g. 3000, 256, 3e-3). Both "
        "need --layout turns."),
    beta: float = typer.Option(0.1, help="The implicit readout's scale."),
    head_hidden: int = typer.Option(32, help="The likelihood readout's MLP width."),
    likelihood_features: str = typer.Option(
        None, help="The likelihood head's inputs, comma-separated, from sum, mean, min, "
        "tokens, end, early_end, redundancy, answer_redundancy (default: sum,mean,min,tokens)."),
    line_reader: Path = typer.Option(
        None, help="The VLM that reads each line alone for the redundancy and "
        "answer_redundancy features, saved with the head (default: the backbone)."),
    likelihood_head: str = typer.Option(
        "set", help="How the likelihood head reads a text: set, an MLP over its features; "
        "lines, the mean over its lines of an MLP over each line's token log-prob statistics, "
        "plus an MLP over its features and line count."),
    lora: bool = typer.Option(False, "--lora", help="LoRA on the language model + projector."),
    lora_r: int = typer.Option(16),
    freeze_vision: bool = typer.Option(False, help="Full fine-tuning, vision tower frozen."),
    logging_steps: int = typer.Option(10),
    save_steps: int = typer.Option(
        0, help="> 0: a checkpoint every N steps; a rerun into --out resumes from the last."),
    report_to: str = typer.Option("none", help="none, tensorboard, wandb (comma-separated)."),
    seed: int = typer.Option(0),
) -> None:
    """Train a question or answer reward model with the pairwise loss; report accuracy."""
    from mmalign.curate.reward_train import RewardTrainConfig, train_reward

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = RewardTrainConfig(
        model=model, annotations=[str(p) for p in annotations], output_dir=str(out),
        kind=kind, image_root=str(image_root) if image_root else None,
        eval_fraction=eval_fraction,
        eval_annotations=[str(p) for p in eval_annotations] if eval_annotations else None,
        train_groups=train_groups, augment_rate=augment_rate, num_train_epochs=epochs,
        max_steps=max_steps, per_device_train_batch_size=batch_size, group_pairs=group_pairs,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, max_length=max_length,
        layout=layout, readout=readout, beta=beta, head_hidden=head_hidden,
        likelihood_features=([f.strip() for f in likelihood_features.split(",")]
                             if likelihood_features else None),
        line_reader=str(line_reader) if line_reader else None,
        likelihood_head=likelihood_head, lora=lora,
        lora_r=lora_r, lora_alpha=2 * lora_r, freeze_vision_tower=freeze_vision,
        logging_steps=logging_steps, save_steps=save_steps,
        report_to=[r.strip() for r in report_to.split(",")], seed=seed)
    try:
        report = train_reward(cfg)
    except _ERRORS as e:
        _fail(e)
    typer.echo(f"{report['kind']} reward model: {report['final']}")
    typer.echo(f"held-out pairwise accuracy: {report['eval_pairwise_accuracy']} (before "
               f"training: {report['eval_pairwise_accuracy_before']}; "
               f"{report['pairs']['eval']['annotation']} pairs)")


@curate_app.command("score")
def score(
    data: Path = typer.Option(..., "--data", help="Corpus file, any supported format."),
    question_rm: Path = typer.Option(..., "--question-rm", help="Saved question reward model."),
    answer_rm: Path = typer.Option(..., "--answer-rm", help="Saved answer reward model."),
    out: Path = typer.Option(..., "--out", help="Output folder (scored.jsonl, manifest.json)."),
    fmt: str = typer.Option(None, "--from", help="Input format (default: detected)."),
    image_root: Path = typer.Option(None, help="Image root (default: the corpus's folder)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Records per step (and resume "
                                                            "unit)."),
    rm_batch_size: int = typer.Option(16, help="Inputs per reward-model forward."),
    skip_bad: bool = typer.Option(False, "--skip-bad",
                                  help="Write malformed records to rejects.jsonl and go on."),
    restart: bool = typer.Option(False, "--restart", help="Discard a partial run in --out."),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if present)."),
    dtype: str = typer.Option("fp32", help="fp32, bf16, fp16, auto."),
) -> None:
    """Score every record with both reward models (batched, resumable); scores go in meta."""
    from mmalign.curate.score import rm_scorer, score_corpus
    from mmalign.io.containers import DataFileError
    from mmalign.models.reward import VLMRewardModel, saved_model_hash

    try:
        q_rm = VLMRewardModel.from_pretrained(question_rm, dtype=dtype, device=device)
        a_rm = VLMRewardModel.from_pretrained(answer_rm, dtype=dtype, device=device)
        models = {name: saved_model_hash(p) + "@" + str(p)
                  for name, p in (("question", question_rm), ("answer", answer_rm))}
        manifest = score_corpus(
            data, out, rm_scorer(q_rm, rm_batch_size), rm_scorer(a_rm, rm_batch_size),
            fmt=fmt, image_root=image_root, batch_size=batch_size,
            on_error="skip" if skip_bad else "stop", models=models, restart=restart,
            log=typer.echo)
    except (*_ERRORS, DataFileError) as e:
        _fail(e)
    c = manifest["counts"]
    typer.echo(f"scored {c['out']} of {c['in']} records ({c['rejected']} rejected) -> "
               f"{out / 'scored.jsonl'}")


@curate_app.command("select")
def select(
    scored: Path = typer.Option(..., "--scored", help="scored.jsonl, or the score folder."),
    out: Path = typer.Option(..., "--out", help="Output folder (selected.jsonl)."),
    alpha: float = typer.Option(0.3, help="Cascade stage 1: share of images kept."),
    beta: float = typer.Option(0.3, help="Cascade stage 2: share of instructions kept."),
    top_k: int = typer.Option(None, "--top-k", help="Plain mode: keep the best K."),
    fraction: float = typer.Option(None, help="Plain mode: keep the best share."),
    threshold: float = typer.Option(None, help="Plain mode: keep scores >= threshold."),
    key: str = typer.Option("answer", help="Plain mode: rank by question or answer score."),
    per_category: bool = typer.Option(True, "--per-category/--global",
                                      help="Plain mode: rank within each category."),
) -> None:
    """Select from stored scores: the alpha/beta cascade per category, or plain top-k."""
    from mmalign.curate.select import run_select
    from mmalign.io.containers import DataFileError

    try:
        manifest = run_select(scored, out, alpha=alpha, beta=beta, key=key, k=top_k,
                              fraction=fraction, threshold=threshold,
                              per_category=per_category)
    except (*_ERRORS, DataFileError) as e:
        _fail(e)
    for cat, c in manifest["categories"].items():
        typer.echo(f"  {cat:<13} {c['records_in']:>7} in -> {c['out']:>6} out")
    c = manifest["counts"]
    typer.echo(f"selected {c['out']} of {c['in']} records -> {out / 'selected.jsonl'}")


@curate_app.command("rewrite")
def rewrite(
    data: Path = typer.Option(..., "--data", help="Records to rewrite (selected.jsonl)."),
    model: str = typer.Option(None, "--model", help="The VLM whose inner LLM rewrites (hf "
                                                     "backend) and whose perplexity is measured."),
    out: Path = typer.Option(..., "--out", help="Output folder (rewritten.jsonl)."),
    world: Path = typer.Option(None, help="World folder: exact scene-graph guard, image root."),
    scenes: Path = typer.Option(None, help="scenes.jsonl for the scene guard (else --world)."),
    image_root: Path = typer.Option(None, help="Image root (default: --world, else the data "
                                               "file's folder)."),
    backend: str = typer.Option("hf", help="hf (the --model itself) or openai."),
    backend_model: str = typer.Option(None, help="openai: the served model name."),
    base_url: str = typer.Option("http://localhost:8000/v1", help="openai: endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai: env var holding the key."),
    cache: Path = typer.Option(None, help="openai: disk cache folder."),
    include_image: bool = typer.Option(False, help="Send the image with the prompts."),
    batch_size: int = typer.Option(32, "--batch-size"),
    max_new_tokens: int = typer.Option(256),
    perplexity: bool = typer.Option(True, help="Measure perplexity before/after (--model)."),
    limit: int = typer.Option(None, help="Rewrite the first N records only."),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if present)."),
    seed: int = typer.Option(0),
) -> None:
    """Rewrite kept answers in the model's own words; a review keeps original or rewrite."""
    from mmalign.curate.rewrite import LexicalGuard, RewriteConfig, SceneGuard, run_rewrite
    from mmalign.io.containers import DataFileError

    try:
        if backend not in ("hf", "openai"):
            raise ValueError(f"unknown backend {backend!r}; expected hf or openai")
        if backend == "hf" and not model:
            raise ValueError("--model is required with the hf backend")
        root = image_root or world or Path(data).parent
        scene_file = scenes or (world / "scenes.jsonl" if world else None)
        guard = SceneGuard.from_scenes(scene_file) if scene_file else LexicalGuard()
        ppl_model = None
        if backend == "hf":
            from mmalign.backends.hf import HFGenerator

            generator = HFGenerator.from_pretrained(model, batch_size=batch_size,
                                                    device=device, dtype="fp32")
            ppl_model = (generator.model, generator.processor)
        else:
            from mmalign.backends.openai import OpenAIGenerator

            if not backend_model:
                raise ValueError("--backend-model is required with the openai backend")
            generator = OpenAIGenerator(backend_model, base_url, api_key_env=api_key_env,
                                        cache=cache, image_root=root)
            if model and perplexity:
                from mmalign.models.load import load_vlm

                ppl_model = load_vlm(model, dtype="fp32", device=device)
        cfg = RewriteConfig(include_image=include_image, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, seed=seed)
        manifest = run_rewrite(data, out, generator, guard, cfg, image_root=root,
                               perplexity_model=ppl_model if perplexity else None,
                               limit=limit, log=typer.echo)
    except (*_ERRORS, DataFileError) as e:
        _fail(e)
    c = manifest["counts"]
    typer.echo(f"{c['answers']} answers: {c['rewritten']} rewritten, {c['kept']} kept, "
               f"{c['rejected']} rejected (guard: {manifest['guard']})")
    if "perplexity" in manifest:
        p = manifest["perplexity"]
        typer.echo(f"perplexity of the answers: {p['before']['perplexity']} before, "
                   f"{p['after']['perplexity']} after")
    typer.echo(json.dumps(manifest["reasons"]) if manifest["reasons"] else "")
