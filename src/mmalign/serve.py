"""`mmalign serve MODEL`: an OpenAI-compatible chat-completions server for any HF VLM.

So a trained model can be the judge or the generator of the rest of the pipeline (through the
`openai` backend), or of any tool that speaks the OpenAI API.

Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health` (no key needed).
- Messages use OpenAI's format: `content` is a string or a list of `text` / `image_url` parts;
  images must be base64 data URLs (the server fetches nothing from the network). Images are
  size-checked before decoding (`mmalign.io.images`), like every image the project opens.
- `temperature` (default 1.0, as OpenAI's; 0 = greedy), `top_p`, `max_tokens` (or
  `max_completion_tokens`), `n`, `seed` and `stop` are honoured; `stream` is refused.
- Errors are OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`.
- Loopback (127.0.0.1) by default. With an API key, every /v1 request needs
  `Authorization: Bearer KEY` (compared in constant time).
- Concurrent requests are batched: a worker thread takes every request waiting (up to
  `max_batch`) and hands them to the Generator in one call, which batches `generate` by
  sampling parameters. The model is only ever used from that one thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import queue
import re
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmalign.backends.base import Generator, GenRequest
from mmalign.io.images import DEFAULT_MAX_BYTES, check_image
from mmalign.records import IMAGE_TOKEN, RecordError, Turn

MAX_N = 16
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)?(;[^,]*)?;base64,(.*)$", re.DOTALL)


class APIError(Exception):
    """An error the client gets as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# --------------------------------------------------------------------------- batching


class _Batcher:
    """One worker thread owns the model; requests queue up and are generated together."""

    def __init__(self, generator: Generator, max_batch: int, wait_s: float):
        self.generator = generator
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmalign-serve-batcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, reqs: list[GenRequest]) -> list[str]:
        futures = []
        for r in reqs:
            fut: Future = Future()
            self._q.put((r, fut))
            futures.append(fut)
        return [f.result() for f in futures]

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._q.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            # Gather what arrives within `wait_s` (requests of one call arrive together).
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                batch.append(item)
            try:
                texts = self.generator.generate([r for r, _ in batch])
                if len(texts) != len(batch):
                    raise RuntimeError(f"generator returned {len(texts)} texts for "
                                       f"{len(batch)} requests")
            except Exception as e:  # noqa: BLE001 - every waiting client must hear of it
                for _, fut in batch:
                    fut.set_exception(e)
            else:
                for (_, fut), text in zip(batch, texts, strict=True):
                    fut.set_result(text)


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    turns: list[Turn]
    images: list[bytes]
    temperature: float
    top_p: float
    max_tokens: int
    n: int
    seed: int | None
    stop: list[str]


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise APIError(400, f"'{key}' must be a number in [{lo}, {hi}], got {v!r}", param=key)
    return float(v)


def _int(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise APIError(400, f"'{key}' must be an integer in [{lo}, {hi}], got {v!r}", param=key)
    return v


def _decode_image(url: Any, where: str, max_bytes: int) -> bytes:
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise APIError(400, f"{where}: image_url needs a 'url' string", param=where)
    m = _DATA_URL.match(url)
    if not m:
        raise APIError(400, f"{where}: only base64 data URLs (data:image/...;base64,...) are "
                            f"accepted; this server fetches nothing from the network",
                       param=where)
    if len(m.group(3)) > max_bytes * 4 // 3 + 8:
        raise APIError(400, f"{where}: image larger than {max_bytes} bytes", param=where)
    try:
        return base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{where}: image data is not valid base64", param=where) from None


def parse_chat_request(body: Any, *, model_name: str, max_tokens_default: int = 256,
                       max_tokens_limit: int = 4096, max_bytes: int = DEFAULT_MAX_BYTES
                       ) -> _Parsed:
    """Validate an OpenAI chat-completions body; raise APIError naming the bad field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "'model' is required", param="model")
    if model != model_name:
        raise APIError(404, f"the model {model!r} does not exist; this server has "
                            f"{model_name!r}", param="model", code="model_not_found")
    if body.get("stream"):
        raise APIError(400, "streaming is not supported by this server", param="stream")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    turns, images = [], []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(400, f"{where} must be an object", param=where)
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for a system message
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"{where}.role must be system, user or assistant, got {role!r}",
                           param=f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            if IMAGE_TOKEN in content:
                raise APIError(400, f"{where}.content contains the reserved text "
                                    f"{IMAGE_TOKEN!r}; send images as image_url parts",
                               param=f"{where}.content")
            text = content
        elif isinstance(content, list):
            pieces = []
            for k, part in enumerate(content):
                pw = f"{where}.content[{k}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    if IMAGE_TOKEN in part["text"]:
                        raise APIError(400, f"{pw}.text contains the reserved text "
                                            f"{IMAGE_TOKEN!r}", param=pw)
                    pieces.append(part["text"])
                elif kind == "image_url":
                    if role != "user":
                        raise APIError(400, f"{pw}: images are accepted in user messages only",
                                       param=pw)
                    images.append(_decode_image(part.get("image_url"), pw, max_bytes))
                    pieces.append(IMAGE_TOKEN)
                else:
                    raise APIError(400, f"{pw}: expected a text or image_url part", param=pw)
            # Put a placeholder directly followed by text on its own line, the way LLaVA-style
            # prompts (and the `openai` backend's requests, split back) have it.
            text = re.sub(re.escape(IMAGE_TOKEN) + r"(?=[^\s<])", IMAGE_TOKEN + "\n",
                          "".join(pieces))
        else:
            raise APIError(400, f"{where}.content must be a string or a list of parts",
                           param=f"{where}.content")
        if not text.strip():
            raise APIError(400, f"{where}.content is empty", param=f"{where}.content")
        turns.append(Turn(role, text))
    if turns[-1].role != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    max_tokens = _int(body, "max_completion_tokens", None, 1, max_tokens_limit)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", max_tokens_default, 1, max_tokens_limit)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, "'stop' must be a string or a list of strings", param="stop")
    return _Parsed(turns=turns, images=images,
                   temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                   top_p=_number(body, "top_p", 1.0, 0.0, 1.0), max_tokens=int(max_tokens),
                   n=int(_int(body, "n", 1, 1, MAX_N)), seed=_int(body, "seed", None, 0, 2**63),
                   stop=stop)


def context_limit(generator: Generator) -> int | None:
    """The model's maximum sequence length, when the generator is a local HF model."""
    model = getattr(generator, "model", None)
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


def prompt_tokens(generator: Generator, req: GenRequest) -> int | None:
    """Tokens of the prompt as the model will see it (image tokens included), when the
    generator exposes its processor; None otherwise."""
    processor = getattr(generator, "processor", None)
    if processor is None:
        return None
    from mmalign.backends.hf import chat_messages
    from mmalign.io.images import load_image

    text = processor.apply_chat_template(chat_messages(req), add_generation_prompt=True,
                                         tokenize=False)
    images = [load_image(p) for p in req.images]
    enc = processor(images=images or None, text=[text], return_tensors="pt")
    return int(enc["input_ids"].shape[1])


def _apply_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cut = [text.find(s) for s in stop if s in text]
    return (text[:min(cut)], True) if cut else (text, False)


# --------------------------------------------------------------------------- the app


def create_app(generator: Generator, *, model_name: str, api_key: str | None = None,
               max_batch: int = 16, batch_wait_s: float = 0.01, max_tokens_default: int = 256,
               max_tokens_limit: int = 4096, max_image_bytes: int = DEFAULT_MAX_BYTES):
    """The FastAPI app serving `generator` under the name `model_name`."""
    batcher = _Batcher(generator, max_batch, batch_wait_s)
    tokenizer = getattr(getattr(generator, "processor", None), "tokenizer", None)
    limit = context_limit(generator)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="mmalign serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(APIError)
    async def _api_error(_req, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=code).body(),
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req, exc: RequestValidationError):
        return JSONResponse(APIError(400, f"invalid request: {exc.errors()}").body(),
                            status_code=400)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 api_key.encode()):
            raise APIError(401, "missing or incorrect API key (Authorization: Bearer KEY)",
                           code="invalid_api_key")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": created, "owned_by": "mmalign"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: Request, body: dict[str, Any]) -> JSONResponse:
        # A sync endpoint: FastAPI runs it in its thread pool, so waiting on the batcher does
        # not block the event loop (and other requests can join the same batch).
        check_key(request)
        p = parse_chat_request(body, model_name=model_name,
                               max_tokens_default=max_tokens_default,
                               max_tokens_limit=max_tokens_limit, max_bytes=max_image_bytes)
        with tempfile.TemporaryDirectory(prefix="mmalign-serve-") as tmp:
            paths = []
            for k, data in enumerate(p.images):
                path = Path(tmp) / f"{k}.img"
                path.write_bytes(data)
                try:
                    check_image(path, max_bytes=max_image_bytes)
                except RecordError as e:
                    raise APIError(400, f"image {k}: {e.reason}", param="messages") from None
                paths.append(path)
            reqs = [GenRequest(images=paths, messages=p.turns, max_new_tokens=p.max_tokens,
                               temperature=p.temperature, top_p=p.top_p, seed=p.seed)
                    for _ in range(p.n)]
            # Refuse what the model cannot hold (as vLLM does, with a 400) rather than fail
            # inside generate: clients treat a 400 as this request's fault, a 500 as the
            # server's, and retry the latter.
            n_prompt = prompt_tokens(generator, reqs[0])
            if limit and n_prompt is not None and n_prompt + p.max_tokens > limit:
                raise APIError(400, f"this model's maximum context length is {limit} tokens; "
                                    f"the messages take {n_prompt} and max_tokens asks for "
                                    f"{p.max_tokens} more", param="messages",
                               code="context_length_exceeded")
            try:
                texts = batcher.submit(reqs)
            except Exception as e:  # noqa: BLE001 - reported to the client as a 500
                raise APIError(500, f"generation failed: {type(e).__name__}: {e}",
                               type="server_error") from None
        choices, completion_tokens = [], 0
        for i, text in enumerate(texts):
            text, stopped = _apply_stop(text, p.stop)
            n_tok = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer \
                else len(text.split())
            # The Generator returns text, not tokens: re-tokenising approximates the count
            # (decoding is lossy, so it can exceed what was generated; capped there).
            n_tok = min(n_tok, p.max_tokens)
            completion_tokens += n_tok
            finish = "length" if n_tok >= p.max_tokens and not stopped else "stop"
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": finish, "logprobs": None})
        if n_prompt is None:  # a generator without a processor: count words
            n_prompt = sum(len(t.content.split()) for t in p.turns)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": completion_tokens,
                      "total_tokens": n_prompt + completion_tokens},
        })

    return app


# --------------------------------------------------------------------------- running


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, notebooks, bench scripts).

    `port=0` picks a free port: the socket is bound here and handed to uvicorn, so there is
    no window in which another process can take the port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="mmalign-serve", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, served_name: str | None = None, device: str | None = None,
          dtype: str | None = "auto", batch_size: int = 16, log=print) -> None:
    """Load `model` and serve it until interrupted (what `mmalign serve` runs)."""
    import uvicorn

    from mmalign.backends.hf import HFGenerator

    if not is_loopback(host) and not api_key:
        log(f"warning: serving on {host} without an API key: anyone who can reach this "
            f"address can use the model")
    gen = HFGenerator.from_pretrained(model, batch_size=batch_size, device=device, dtype=dtype)
    name = served_name or str(model)
    app = create_app(gen, model_name=name, api_key=api_key, max_batch=batch_size)
    log(f"serving {name!r} on http://{host}:{port}/v1 (chat completions, models)")
    uvicorn.run(app, host=host, port=port, log_level="info")
