"""`mmalign pairs inject` and `mmalign pairs fit-lexicon` (mounted as `mmalign pairs`)."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mmalign.io.containers import DataFileError
from mmalign.io.formats import iter_records
from mmalign.records import PreferencePair, RecordError, Sample

pairs_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Preference pairs: hallucination injection (POVID stage 1).")

OUTPUTS = {"pairs": "pairs.jsonl", "povid": "pairs_povid.json", "rejects": "rejects.jsonl",
           "lexicon": "lexicon.json", "manifest": "manifest.json"}


class InjectorName(StrEnum):
    lexical = "lexical"
    llm = "llm"


class Backend(StrEnum):
    hf = "hf"
    openai = "openai"


class Turns(StrEnum):
    last = "last"
    all = "all"


class Evidence(StrEnum):
    absent = "absent"
    unmentioned = "unmentioned"


class OnError(StrEnum):
    skip = "skip"
    stop = "stop"


FromOpt = Annotated[str | None, typer.Option(
    "--from", help="Input format (llava, llava-jsonl, sharegpt, trl, jsonl, hf, parquet); "
    "detected when left out.")]
OnErrorOpt = Annotated[OnError, typer.Option(
    "--on-error", help="A malformed input record: skip (into rejects.jsonl) or stop.")]


@pairs_app.command("inject")
def inject(
    src: Annotated[Path, typer.Argument(metavar="IN", help="Ground-truth samples, any format.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    from_: FromOpt = None,
    injector: Annotated[InjectorName, typer.Option(
        "--injector", help="lexical (offline, from a lexicon) or llm (--model).")
    ] = InjectorName.lexical,
    types: Annotated[str, typer.Option(
        "--types", help="Hallucination types, comma-separated, tried in random order with "
        "fallback: object,color,count,size,position,relation,reasoning (or all).")] = "all",
    edits: Annotated[int, typer.Option("--edits", min=1,
                                       help="Hallucinations per answer.")] = 1,
    turns: Annotated[Turns, typer.Option(
        "--turns", help="Corrupt each sample's last answer, or every answer.")] = Turns.last,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    lexicon: Annotated[Path | None, typer.Option(
        "--lexicon", help="Start from this lexicon JSON instead of the packaged English one.")
    ] = None,
    fit: Annotated[bool, typer.Option(
        "--fit/--no-fit", help="Learn object nouns, attributes and co-occurrence from IN.")
    ] = True,
    min_count: Annotated[int, typer.Option(
        "--min-count", min=1, help="Fit: times a new noun must be seen.")] = 3,
    object_evidence: Annotated[Evidence, typer.Option(
        "--object-evidence", help="absent: add only objects the image's answers deny (always "
        "false); unmentioned: also co-occurring objects no answer mentions (more pairs, may "
        "be present).")] = Evidence.absent,
    model: Annotated[str | None, typer.Option(
        "--model", help="llm: HF model folder/hub id, or the endpoint's model name.")] = None,
    backend: Annotated[Backend, typer.Option("--backend", help="llm: hf or openai.")
                       ] = Backend.hf,
    base_url: Annotated[str, typer.Option("--base-url", help="openai: endpoint base URL.")
                        ] = "https://api.openai.com/v1",
    api_key_env: Annotated[str, typer.Option(
        "--api-key-env", help="openai: environment variable holding the key.")
    ] = "OPENAI_API_KEY",
    prompt: Annotated[str, typer.Option(
        "--prompt", help="llm: packaged prompt name or a .txt file.")] = "inject_v1",
    with_image: Annotated[bool, typer.Option(
        "--with-image/--text-only", help="llm: also show the model the image.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 512,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.0,
    retries: Annotated[int, typer.Option(
        "--retries", min=0, help="llm: re-asks after an unusable reply.")] = 1,
    device: Annotated[str | None, typer.Option("--device", help="llm/hf: cpu, cuda, ...")
                      ] = None,
    image_root: Annotated[Path | None, typer.Option(
        "--image-root", help="Folder image paths are relative to (default: IN's folder).")
    ] = None,
    on_error: OnErrorOpt = OnError.stop,
    limit: Annotated[int | None, typer.Option("--limit", min=1,
                                              help="Use the first N records only.")] = None,
) -> None:
    """Write rejected answers carrying declared hallucinations: OUT/pairs.jsonl (ours),
    OUT/pairs_povid.json (POVID's format), OUT/rejects.jsonl, OUT/manifest.json."""
    from mmalign.io.atomic import write_json, write_jsonl
    from mmalign.io.formats import write_records
    from mmalign.pairs.inject import InjectionError, inject_hallucinations, parse_types
    from mmalign.pairs.lexicon import Lexicon, LexiconError, fit_lexicon

    t0 = time.time()
    try:
        declared = parse_types(types)
    except InjectionError as e:
        raise typer.BadParameter(str(e), param_hint="--types") from None
    if injector is InjectorName.llm and not model:
        raise typer.BadParameter("the llm injector needs --model", param_hint="--model")
    root = image_root or src.parent
    samples, rejects = _read_samples(src, from_, root, on_error, limit)

    used_lexicon = None
    if injector is InjectorName.lexical:
        from mmalign.pairs.inject import LexicalInjector

        try:
            used_lexicon = Lexicon.load(lexicon) if lexicon else Lexicon.default()
        except LexiconError as e:
            _fail(str(e))
        if fit:
            used_lexicon = fit_lexicon(samples, used_lexicon, min_count=min_count)
        inj: Any = LexicalInjector(used_lexicon, types=declared, edits=edits, seed=seed,
                                   object_evidence=object_evidence.value)
    else:
        from mmalign.pairs.inject_llm import LLMInjector

        generator = _generator(backend, model, base_url, api_key_env, batch_size, device,
                               root, out)
        try:
            inj = LLMInjector(generator, types=declared, edits=edits, prompt=prompt,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              retries=retries, with_image=with_image, image_root=root)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))

    def progress(done: int, total: int) -> None:
        typer.echo(f"  {done}/{total} answers", err=True)

    result = inject_hallucinations(samples, inj, turns=turns.value, batch_size=batch_size,
                                   progress=progress if injector is InjectorName.llm else None)

    out.mkdir(parents=True, exist_ok=True)
    write_records(out / OUTPUTS["pairs"], result.pairs, "jsonl")
    write_records(out / OUTPUTS["povid"], result.pairs, "povid")
    write_jsonl(out / OUTPUTS["rejects"], [*rejects, *result.skipped])
    outputs = {k: OUTPUTS[k] for k in ("pairs", "povid", "rejects")}
    if used_lexicon is not None:
        used_lexicon.save(out / OUTPUTS["lexicon"])
        outputs["lexicon"] = OUTPUTS["lexicon"]
    counts = {"records": len(samples) + len(rejects), "rejected": len(rejects), **result.counts}
    write_json(out / OUTPUTS["manifest"], {
        "stage": "pairs.inject",
        "mmalign_version": _version(),
        "config": {"injector": injector.value, "types": list(declared), "edits": edits,
                   "turns": turns.value, "seed": seed, "fit": fit, "min_count": min_count,
                   "object_evidence": object_evidence.value, "model": model,
                   "backend": backend.value if injector is InjectorName.llm else None,
                   "prompt": prompt if injector is InjectorName.llm else None,
                   "with_image": with_image, "limit": limit,
                   "lexicon": str(lexicon) if lexicon else None},
        "inputs": {"file": str(src), "sha256": _hash(src)},
        "injector": inj.describe(),
        "counts": counts,
        "outputs": outputs,
        "seconds": round(time.time() - t0, 2),
    })
    typer.echo(f"in: {counts['records']} records ({counts['answers']} answers)  "
               f"out: {counts['pairs']} pairs  skipped: {counts['skipped']} "
               f"(failed: {counts['failed']})  rejected: {counts['rejected']}")
    typer.echo("by type: " + (", ".join(f"{k}={v}" for k, v in counts["by_type"].items())
                              or "none"))
    typer.echo(f"written to {out}/")


@pairs_app.command("fit-lexicon")
def fit_lexicon_command(
    src: Annotated[Path, typer.Argument(metavar="IN", help="Corpus to learn from.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Lexicon JSON to write.")],
    from_: FromOpt = None,
    lexicon: Annotated[Path | None, typer.Option(
        "--lexicon", help="Extend this lexicon instead of the packaged English one.")] = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1)] = 3,
    min_images: Annotated[int, typer.Option("--min-images", min=1)] = 2,
    on_error: OnErrorOpt = OnError.stop,
) -> None:
    """Learn object nouns, attribute words and co-occurrence counts from a corpus."""
    from mmalign.pairs.lexicon import Lexicon, LexiconError, fit_lexicon

    samples, rejects = _read_samples(src, from_, src.parent, on_error, None)
    try:
        base = Lexicon.load(lexicon) if lexicon else Lexicon.default()
    except LexiconError as e:
        _fail(str(e))
    lex = fit_lexicon(samples, base, min_count=min_count, min_images=min_images)
    lex.save(out)
    new = sorted(set(lex.learned_objects) - set(base.learned_objects))
    typer.echo(f"in: {len(samples) + len(rejects)} records  rejected: {len(rejects)}  "
               f"images: {lex.fitted.get('images', 0)}")
    typer.echo(f"learned objects ({len(new)}): {', '.join(new) or 'none'}")
    typer.echo(f"co-occurring pairs: {len(lex.cooccurrence)}  lexicon: {out}")


# --------------------------------------------------------------------------- helpers


def _read_samples(src: Path, fmt: str | None, root: Path, on_error: OnError,
                  limit: int | None) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Samples of IN; malformed records stop the command or become reject rows."""
    samples: list[Sample] = []
    rejects: list[dict[str, Any]] = []
    try:
        for index, item, raw in iter_records(src, fmt, image_root=root):
            if limit is not None and len(samples) + len(rejects) >= limit:
                break
            if isinstance(item, PreferencePair):
                item = RecordError("expected a ground-truth sample (a conversation with the "
                                   "answer), got a preference pair", file=str(src), index=index,
                                   record_id=item.id)
            if isinstance(item, RecordError):
                if on_error is OnError.stop:
                    _fail(f"{item}\nstopped at the first bad record (--on-error stop); "
                          f"nothing was written")
                rejects.append({"stage": "pairs.inject", **item.to_dict(),
                                "raw": raw if isinstance(raw, str) else repr(raw)})
                continue
            samples.append(item)
    except (DataFileError, OSError) as e:
        _fail(str(e))
    return samples, rejects


def _generator(backend: Backend, model: str | None, base_url: str, api_key_env: str,
               batch_size: int, device: str | None, root: Path, out: Path) -> Any:
    assert model is not None
    if backend is Backend.hf:
        from mmalign.backends.hf import HFGenerator

        return HFGenerator.from_pretrained(model, batch_size=batch_size, device=device)
    from mmalign.backends.openai import OpenAIGenerator

    # Completions are cached under OUT, so a rerun (or a resumed crash) costs nothing.
    return OpenAIGenerator(model, base_url, api_key_env=api_key_env, image_root=root,
                           cache=out / "llm_cache")


def _hash(path: Path) -> str | None:
    from mmalign.io.images import image_hash

    return "sha256:" + image_hash(path) if path.is_file() else None


def _version() -> str:
    from mmalign import __version__

    return __version__


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
