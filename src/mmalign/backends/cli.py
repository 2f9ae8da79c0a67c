"""`mmalign judge ...` and `mmalign serve MODEL` (plain functions; the root app mounts them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

BACKENDS = ("oracle", "openai", "hf")


def make_generator(backend: str, model: str | None, *, base_url: str | None = None,
                   api_key_env: str | None = "OPENAI_API_KEY", cache: Path | None = None,
                   device: str | None = None, dtype: str | None = "auto", batch_size: int = 16,
                   concurrency: int = 4, timeout: float = 120.0, max_retries: int = 6):
    """A Generator for `hf` (local model) or `openai` (endpoint); errors name the option."""
    if not model:
        raise typer.BadParameter(f"the {backend} backend needs --model")
    if backend == "hf":
        from mmalign.backends.hf import HFGenerator

        return HFGenerator.from_pretrained(model, batch_size=batch_size, device=device,
                                           dtype=dtype)
    if backend == "openai":
        from mmalign.backends.openai import OpenAIGenerator

        if not base_url:
            raise typer.BadParameter("the openai backend needs --base-url (for OpenAI itself: "
                                     "https://api.openai.com/v1)")
        return OpenAIGenerator(model, base_url, api_key_env=api_key_env, cache=cache,
                               concurrency=concurrency, timeout=timeout,
                               max_retries=max_retries)
    raise typer.BadParameter(f"unknown generation backend {backend!r}; use hf or openai")


def judge_command(
    samples: Path = typer.Argument(..., help="Sampled groups (`mmalign pairs sample` output)."),
    out: Path = typer.Option(..., "--out", help="Ratings JSONL (or, with --consistency, a "
                                                "JSON report)."),
    backend: str = typer.Option("oracle", "--backend", help="oracle, openai or hf."),
    world: Path = typer.Option(None, "--world", help="World folder (oracle backend)."),
    model: str = typer.Option(None, "--model", help="Model name (openai) or folder (hf)."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. "
                                                          "http://127.0.0.1:8000/v1."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="Environment variable holding the API key."),
    cache: Path = typer.Option(None, "--cache", help="Completion cache (openai; default "
                                                     "OUT.cache.sqlite)."),
    prompt: str = typer.Option("judge_v1", "--prompt", help="Packaged prompt or a .txt file."),
    use_reference: bool = typer.Option(True, help="Show the judge the reference answer."),
    max_reasks: int = typer.Option(1, "--max-reasks", help="Re-asks per malformed reply."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="Judge sampling temperature "
                                      "(0 = greedy; > 0 makes --consistency meaningful for "
                                      "model judges)."),
    noise: float = typer.Option(0.0, "--noise", help="Oracle annotator noise (sd, points)."),
    seed: int = typer.Option(0, "--seed", help="Oracle noise seed."),
    image_root: Path = typer.Option(None, help="Image root (default: the samples' folder)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Groups per judging batch."),
    concurrency: int = typer.Option(4, help="Parallel requests (openai)."),
    timeout: float = typer.Option(120.0, help="Seconds per HTTP request (openai)."),
    max_retries: int = typer.Option(6, help="Retries on 429/5xx/timeouts (openai)."),
    device: str = typer.Option(None, help="cpu, cuda, ... (hf)."),
    limit: int = typer.Option(None, help="Judge the first N groups only."),
    retry_failed: bool = typer.Option(False, help="Re-rate groups with a failed rating."),
    consistency: int = typer.Option(None, "--consistency", help="Rate the first N groups "
                                    "twice and report agreement instead of writing ratings."),
) -> None:
    """Rate sampled answers 0-4 on five attributes (reasoning first); resumable."""
    from mmalign.backends.judge import (
        LLMJudge,
        ResumeMismatchError,
        group_item,
        judge_file,
    )
    from mmalign.backends.judge import (
        consistency as consistency_report,
    )
    from mmalign.io.journal import read_journal

    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown judge backend {backend!r}; use one of "
                                 f"{', '.join(BACKENDS)}", param_hint="--backend")
    if backend == "oracle":
        from mmalign.backends.oracle import OracleJudge

        if world is None:
            raise typer.BadParameter("the oracle judge needs --world", param_hint="--world")
        judge = OracleJudge(world, noise=noise, seed=seed, use_reference=use_reference)
    else:
        if backend == "openai" and cache is None:
            cache = out.with_name(out.name + ".cache.sqlite")
        gen = make_generator(backend, model, base_url=base_url, api_key_env=api_key_env,
                             cache=cache, device=device, concurrency=concurrency,
                             timeout=timeout, max_retries=max_retries)
        judge = LLMJudge(gen, prompt=prompt, max_reasks=max_reasks,
                         max_new_tokens=max_new_tokens, temperature=temperature,
                         use_reference=use_reference)

    if consistency is not None:
        root = image_root or samples.parent
        rows = read_journal(samples)[:consistency]
        items = [group_item(r, root, where=str(samples)) for r in rows]
        report = consistency_report(judge, items)
        from mmalign.io.atomic import write_json

        write_json(out, report)
        typer.echo(json.dumps(report, indent=2))
        return
    try:
        counts = judge_file(judge, samples, out, image_root=image_root, batch_size=batch_size,
                            limit=limit, retry_failed=retry_failed)
    except ResumeMismatchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    stats = getattr(judge, "stats", None)
    gen_stats = getattr(getattr(judge, "generator", None), "stats", None)
    typer.echo(json.dumps(counts | ({"judge_stats": stats} if stats else {})
                          | ({"backend_stats": gen_stats} if gen_stats else {}), indent=2))


def serve_command(
    model: str = typer.Argument(..., help="Model folder or hub id (any HF VLM)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback "
                                                         "by default)."),
    port: int = typer.Option(8000, "--port"),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable whose "
                                    "value clients must send as 'Authorization: Bearer KEY'."),
    served_name: str = typer.Option(None, "--served-name", help="Model name clients use "
                                                               "(default: MODEL as given)."),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16, fp16."),
    batch_size: int = typer.Option(16, "--batch-size", help="Requests generated together."),
) -> None:
    """Serve a model over an OpenAI-compatible /v1/chat/completions API."""
    from mmalign.serve import serve

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise typer.BadParameter(f"${api_key_env} is not set", param_hint="--api-key-env")
    serve(model, host=host, port=port, api_key=api_key, served_name=served_name,
          device=device, dtype=dtype, batch_size=batch_size, log=typer.echo)
