"""A real HTTP server on 127.0.0.1 that speaks /v1/chat/completions like a judge model would,
with scripted failures (429, 5xx, slow replies, a hang) and a log of every request.

Its "model" rates the answer found in the prompt by fixed rules of its text, so replies vary
with the request; answers containing PROSE / SEVEN / MISSING get malformed replies.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = re.compile(r"Answer to rate:\n(.*?)\n\nRate the answer", re.DOTALL)


def user_texts(body: dict) -> list[str]:
    out = []
    for m in body["messages"]:
        if m["role"] != "user":
            continue
        c = m["content"]
        out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c
                                                         if p["type"] == "text"))
    return out


def expected_scores(answer: str) -> dict[str, int]:
    """The scripted model's rating rules (tests recompute them to check results)."""
    words = answer.split()
    return {"helpfulness": min(4, len(words)), "correctness": 0 if "wrong" in answer else 4,
            "coherence": 4 if answer.endswith(".") else 2,
            "complexity": min(4, answer.count(".")), "verbosity": min(4, len(words) // 3)}


def judge_reply(body: dict) -> str:
    texts = user_texts(body)
    m = ANSWER.search(texts[0])
    if not m:
        return "I cannot find an answer to rate."
    answer, reask = m.group(1), len(texts) > 1
    if "PROSE" in answer and not reask:
        return "This answer looks reasonable to me; I would rate it highly."
    if "SEVEN" in answer:
        return json.dumps({"reasoning": "generous", "scores": expected_scores(answer)
                           | {"correctness": 7}})
    if "MISSING" in answer:
        return json.dumps({"reasoning": "short", "scores": {"helpfulness": 2}})
    return json.dumps({"reasoning": f"{len(answer.split())} words",
                       "scores": expected_scores(answer)})


class ScriptedServer:
    def __init__(self, plan: list[tuple[int, dict[str, str]]] | None = None,
                 slow_first: float = 0.0, hang_after: int | None = None):
        self.plan = list(plan or [])  # (status, headers) answered before behaving
        self.slow_first = slow_first  # seconds the first request waits before its answer
        self.hang_after = hang_after  # after this many 200s, block until `release`
        self.log: list[dict] = []  # every request: time, body, body hash, auth, status
        self.completed = 0
        self.hung = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                server._handle(self, raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self, **kw) -> None:
        with self._lock:
            self.log.clear()
            self.completed = 0
            for k, v in kw.items():
                setattr(self, k, v)

    def ok_hashes(self) -> set[str]:
        return {r["hash"] for r in self.log if r["status"] == 200}

    def _handle(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        body = json.loads(raw)
        entry = {"time": time.monotonic(), "body": body, "auth": h.headers.get("authorization"),
                 "hash": hashlib.sha256(raw).hexdigest(), "status": None}
        with self._lock:
            self.log.append(entry)
            first = len(self.log) == 1
            scripted = self.plan.pop(0) if self.plan else None
            hang = self.hang_after is not None and self.completed >= self.hang_after
        if h.path != "/v1/chat/completions":
            return self._send(h, entry, 404, {"error": {"message": "no such route"}})
        if scripted is not None:
            status, headers = scripted
            return self._send(h, entry, status, {"error": {"message": f"scripted {status}"}},
                              headers)
        if hang:
            self.hung.set()
            self.release.wait(timeout=120)
            return self._send(h, entry, 503, {"error": {"message": "going away"}})
        if first and self.slow_first:
            time.sleep(self.slow_first)
        reply = judge_reply(body)
        with self._lock:
            self.completed += 1
        self._send(h, entry, 200, {
            "id": "x", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}]})

    @staticmethod
    def _send(h, entry, status, payload, headers=None):
        entry["status"] = status
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test, or a killed run)
