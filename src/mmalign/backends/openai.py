"""`openai` backend: a Generator over any OpenAI-compatible chat-completions endpoint.

Works with vLLM, SGLang, Ollama, OpenAI, Gemini's compatible endpoint and `mmalign serve`.

- Images go inline as base64 data URLs (`image_url` parts), each `<image>` placeholder of a
  turn becoming one part in place, so multi-image prompts keep their order.
- The key is read from the environment variable named by `api_key_env` (never a command-line
  argument, which `ps` shows); if the variable is unset no Authorization header is sent (local
  servers without a key).
- Each HTTP request has a timeout. 429, 5xx (and 408/409), timeouts and connection errors
  are retried with exponential backoff (`backoff * 2**attempt`, jittered, capped at
  `max_backoff`); a `Retry-After` header (seconds or an HTTP date) is honoured instead,
  capped at `max_wait`.
  After `max_retries` retries `BackendUnavailable` stops the run. 400/413/422 raise
  `RequestRejected` (that one request is bad; a judge records it and goes on); 401/403/404
  raise `BackendConfigError` (every request would fail the same way).
- Every completion is stored in a disk cache keyed by (model, prompt hash, image hashes,
  sampling params, messages, and the request's `sample_index`/`repeat` tags), before the
  call returns, so a rerun costs nothing and a killed run repeats no finished request.
- Requests of one `generate` call run `concurrency` at a time in threads (servers batch them).
"""

from __future__ import annotations

import base64
import email.utils
import io
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mmalign.backends.base import GenRequest, RequestRejected
from mmalign.backends.cache import DiskCache, cache_key
from mmalign.io.images import check_image, image_hash, resolve_image
from mmalign.records import IMAGE_TOKEN

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
REJECT_STATUS = frozenset({400, 413, 422})
# What OpenAI-compatible servers accept as data URLs; anything else is re-encoded as PNG.
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Request meta keys that make two otherwise identical requests different cache entries:
# the k-th of K samples, and the second pass of a consistency check.
CACHE_TAGS = ("sample_index", "repeat")


class BackendUnavailable(RuntimeError):
    """The endpoint kept failing (429/5xx/timeouts) after every retry."""


class BackendConfigError(RuntimeError):
    """A failure every request would share: bad key, unknown model, wrong URL."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds (`"2"`, `"0.5"`) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def image_data_url(path: str | os.PathLike) -> str:
    """The image as a base64 data URL, after the size/corruption checks of `check_image`."""
    from PIL import Image

    check_image(path)
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        mime = _MIME.get(img.format or "")
        if mime is None:  # BMP, TIFF, ...: not accepted everywhere, send PNG instead
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
            data, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAIGenerator:
    """Generate (or judge, through `LLMJudge`) with a model behind an OpenAI-compatible API."""

    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", *,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 6, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_wait: float = 300.0, concurrency: int = 4,
                 cache: DiskCache | str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None, max_tokens_field: str = "max_tokens",
                 extra_body: dict[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if max_retries < 0 or concurrency < 1:
            raise ValueError("max_retries must be >= 0 and concurrency >= 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{model}"
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.cache = DiskCache(cache) if isinstance(cache, str | os.PathLike) else cache
        self.image_root = Path(image_root) if image_root is not None else None
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._client = httpx.Client(timeout=httpx.Timeout(timeout))
        self._images: dict[Path, tuple[str, str]] = {}  # path -> (sha256, data URL)
        self._lock = threading.Lock()
        self.stats = {"http_requests": 0, "retries": 0, "cache_hits": 0, "completions": 0,
                      "waited_s": 0.0}

    # ------------------------------------------------------------------ Generator protocol

    def generate(self, requests: list[GenRequest]) -> list[str]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self.complete(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            # map() re-raises the first exception when its result is reached; the others'
            # completions are already cached by then.
            return list(pool.map(self.complete, requests))

    def complete(self, req: GenRequest) -> str:
        """One chat completion, from the cache when this exact request was answered before."""
        images = [self._image(p) for p in req.images]
        body = self._body(req, [url for _, url in images])
        key = None
        if self.cache is not None:
            key = cache_key({
                "model": self.model,
                "prompt_hash": req.meta.get("prompt_hash"),
                "images": [h for h, _ in images],
                "params": {k: v for k, v in body.items() if k not in ("model", "messages")},
                "messages": [[t.role, t.content] for t in req.messages],
                "tags": {k: req.meta.get(k) for k in CACHE_TAGS},
            })
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return hit
        text = self._post(body)
        if self.cache is not None and key is not None:
            self.cache.put(key, text, self.model)
        self._count("completions")
        return text

    def close(self) -> None:
        self._client.close()
        if self.cache is not None:
            self.cache.close()

    # ------------------------------------------------------------------ request building

    def _image(self, p: str | os.PathLike) -> tuple[str, str]:
        path = Path(p)
        if self.image_root is not None and not path.is_absolute():
            path = resolve_image(self.image_root, str(p))
        with self._lock:
            if path in self._images:
                return self._images[path]
        value = (image_hash(path), image_data_url(path))
        with self._lock:
            if len(self._images) > 4096:  # bound memory on long runs over many images
                self._images.clear()
            self._images[path] = value
        return value

    def _body(self, req: GenRequest, urls: list[str]) -> dict[str, Any]:
        messages, used = [], 0
        for t in req.messages:
            pieces = t.content.split(IMAGE_TOKEN)
            if len(pieces) == 1:
                messages.append({"role": t.role, "content": t.content})
                continue
            parts: list[dict[str, Any]] = []
            for k, text in enumerate(pieces):
                if k:
                    if used >= len(urls):
                        raise ValueError(f"request has more {IMAGE_TOKEN} placeholders than "
                                         f"images ({len(urls)})")
                    parts.append({"type": "image_url", "image_url": {"url": urls[used]}})
                    used += 1
                if text.strip():
                    parts.append({"type": "text", "text": text.strip("\n")})
            messages.append({"role": t.role, "content": parts})
        if used != len(urls):
            raise ValueError(f"request has {used} {IMAGE_TOKEN} placeholders for {len(urls)} "
                             f"images")
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": req.temperature, "top_p": req.top_p,
                                self.max_tokens_field: req.max_new_tokens}
        if req.seed is not None:
            body["seed"] = req.seed
        return body | self.extra_body

    # ------------------------------------------------------------------ HTTP with retries

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _post(self, body: dict[str, Any]) -> str:
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            self._count("http_requests")
            wait = None
            try:
                resp = self._client.post(url, json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    return self._content(resp, url)
                last = f"HTTP {resp.status_code}: {_error_message(resp)}"
                if resp.status_code in REJECT_STATUS:
                    raise RequestRejected(f"{url} refused the request ({last})")
                if resp.status_code not in RETRY_STATUS:
                    hint = ""
                    if resp.status_code in (401, 403) and self.api_key_env:
                        hint = (f" (is ${self.api_key_env} set to a valid key?)"
                                if os.environ.get(self.api_key_env) else
                                f" (${self.api_key_env} is not set)")
                    raise BackendConfigError(f"{url}: {last}{hint}")
                wait = retry_after_seconds(resp.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1)
            wait = min(wait, self.max_wait)
            self._count("retries")
            self._count("waited_s", wait)
            self._sleep(wait)
        raise BackendUnavailable(f"{url}: no answer after {self.max_retries + 1} attempts; "
                                 f"last error: {last}")

    def _content(self, resp: httpx.Response, url: str) -> str:
        try:
            data = resp.json()
            msg = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendUnavailable(f"{url}: a 200 reply that is not a chat completion: "
                                     f"{resp.text[:200]!r}") from None
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):  # some servers answer in typed parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""

    def _count(self, key: str, n: float = 1) -> None:
        with self._lock:
            self.stats[key] += n


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    except (ValueError, AttributeError):
        pass
    return resp.text[:300] or resp.reason_phrase
