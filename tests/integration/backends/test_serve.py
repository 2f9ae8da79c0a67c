"""`mmalign serve` as a real HTTP server on the tiny model: the official `openai` client, our
`openai` backend and the LLM judge talk to it."""

from __future__ import annotations

import httpx
import openai
import pytest

from mmalign.backends.base import GenRequest
from mmalign.backends.hf import HFGenerator
from mmalign.backends.judge import JudgeItem, LLMJudge
from mmalign.backends.openai import OpenAIGenerator, image_data_url
from mmalign.serve import ServerThread, create_app

KEY = "test-key-0451"


@pytest.fixture(scope="module")
def hf(tiny_model):
    return HFGenerator.from_pretrained(tiny_model, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def server(hf):
    with ServerThread(create_app(hf, model_name="tiny", api_key=KEY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def image(tiny_world):
    return tiny_world / "images" / "bench" / "b000000.png"


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def image_message(image, text):
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        {"type": "text", "text": text}]}]


def test_official_client_lists_and_completes(client, hf, image):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    for max_tokens in (2, 6):
        r = client.chat.completions.create(model="tiny", temperature=0, max_tokens=max_tokens,
                                           messages=image_message(image, "What shape is this?"))
        direct = hf.generate([GenRequest.single(image, "What shape is this?",
                                                max_new_tokens=max_tokens)])[0]
        # the server passed the image, the prompt, greedy decoding and max_tokens through
        assert r.choices[0].message.content == direct
        assert r.model == "tiny" and r.usage.completion_tokens <= max_tokens
        assert r.usage.prompt_tokens > 64  # the image's tokens are counted
    many = client.chat.completions.create(model="tiny", temperature=1.0, top_p=0.9, seed=3,
                                          n=2, max_tokens=4,
                                          messages=image_message(image, "Describe."))
    assert [c.index for c in many.choices] == [0, 1]


def test_errors_are_openai_style(client, server, image):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong",
                      max_retries=0).models.list()
    raw = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny"})
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-x", messages=image_message(image, "Hi"))
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="data URLs"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}])
    with pytest.raises(openai.BadRequestError, match="streaming"):
        client.chat.completions.create(model="tiny", stream=True,
                                       messages=image_message(image, "Hi"))
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", max_tokens=8,
                                       messages=image_message(image, "star " * 800))
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", temperature=7,
                                       messages=image_message(image, "Hi"))
    bad = httpx.post(server.url + "/v1/chat/completions", headers={
        "Authorization": f"Bearer {KEY}"}, json={"model": "tiny", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64,aGVsbG8="}}]}]})
    assert bad.status_code == 400 and "image 0" in bad.json()["error"]["message"]


def test_openai_backend_against_serve(server, hf, image, tmp_path, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", KEY)
    gen = OpenAIGenerator("tiny", server.url + "/v1", api_key_env="SERVE_KEY",
                          cache=tmp_path / "c.sqlite", concurrency=2)
    reqs = [GenRequest.single(image, q, max_new_tokens=5) for q in ("What color?", "Describe.")]
    assert gen.generate(reqs) == hf.generate(reqs)
    assert gen.stats["http_requests"] == 2


def test_llm_judge_over_serve_records_failures_and_goes_on(server, image, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("SERVE_KEY", KEY)
    item = JudgeItem(id="o1", images=[image], question="How many circles?",
                     responses=["Two circles.", "Three."], reference="Two.")
    # The packaged prompt is longer than the tiny model's 512 positions: the server answers
    # 400 context_length_exceeded, and each rating is recorded as failed.
    gen = OpenAIGenerator("tiny", server.url + "/v1", api_key_env="SERVE_KEY")
    [ratings] = LLMJudge(gen, max_new_tokens=16).rate([item])
    assert all(r.error and "maximum context length" in r.error for r in ratings)
    # A short prompt fits; the untrained model's reply is no rating: re-asked, then failed.
    short = tmp_path / "short.txt"
    short.write_text("Q: {question}\nA: {response}\nRate it as JSON.\n"
                     "=== re-ask ===\nInvalid ({error}). JSON only.")
    gen = OpenAIGenerator("tiny", server.url + "/v1", api_key_env="SERVE_KEY")
    judge = LLMJudge(gen, prompt=short, max_new_tokens=16)
    [ratings] = judge.rate([item])
    assert [r.response_index for r in ratings] == [0, 1]
    assert all(r.error and "after 2 tries" in r.error for r in ratings)
    assert gen.stats["http_requests"] == 4  # one ask and one re-ask per answer
    assert all(r.judge == "openai:tiny/short+ref" and r.prompt_hash == judge.prompt_hash
               for r in ratings)
