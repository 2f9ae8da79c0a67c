"""The readouts beside the paper's last-token head, on real tiny models: the implicit one,
beta * (log pi - log pi_ref) of the scored text, and the likelihood one, an MLP over the frozen
backbone's token log-prob statistics."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from mmalign.curate.annotations import answer_text
from mmalign.curate.reward_train import RewardTrainConfig, train_reward
from mmalign.io.images import load_image
from mmalign.models.reward import (
    DEFAULT_LIKELIHOOD_FEATURES,
    LIKELIHOOD_FEATURES,
    LINE_ANSWER_TOKENS,
    LINE_READER_DIR,
    LINE_STATISTICS,
    NO_ANSWER_PAIR,
    NO_LINE_PAIR,
    REFERENCE_DIR,
    RewardInput,
    VLMRewardModel,
    encode_inputs,
)
from mmalign.models.tiny import TinyConfig, build_tiny

ANSWER = "Question: Where is the star?\nAnswer: In the upper left corner, next to a red circle."
QUESTIONS = "What color is the ring?\nIs there a cross?"


def _items(world):
    images = sorted((world / "images" / "corpus").glob("*.png"))
    return [RewardInput([images[0]], "Question: How many circles?\nAnswer: Two."),
            RewardInput([images[1]], ANSWER), RewardInput([images[2]], QUESTIONS)]


def _implicit(model, **kw):
    rm = VLMRewardModel.from_backbone(model, readout="implicit", **kw)
    rm.layout = "turns"
    return rm


def _answer_token_logps(model, processor, image, end_token: bool = False,
                        text: str = ANSWER) -> torch.Tensor:
    """Log-probs of an answer RM text's (ANSWER's) answer tokens and the end of turn (`</s>`,
    not the template's newline after it) computed apart from the reward model's code: the
    template by hand, the model's full logits. With `end_token`, the log-probs of `</s>` at
    those positions."""
    question, answer = text.removeprefix("Question: ").split("\nAnswer: ")
    msgs = [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "\n" + question}]}]
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(
        msgs + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        tokenize=False)
    assert full.startswith(prompt)
    pix = [[load_image(image)]]
    assert full.endswith(answer + "</s>\n")
    n_prompt = processor(text=[prompt], images=pix, return_tensors="pt")["input_ids"].shape[1]
    n_turn = processor(text=[full.removesuffix("\n")], images=pix,
                       return_tensors="pt")["input_ids"].shape[1]
    enc = processor(text=[full], images=pix, return_tensors="pt")
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits[0, :-1].float(), -1)
    target = enc["input_ids"][0, 1:]
    if end_token:
        assert processor.tokenizer.decode(target[n_turn - 2]) == "</s>"
        return logp[n_prompt - 1:n_turn - 1, int(target[n_turn - 2])]
    return logp.gather(-1, target[:, None])[n_prompt - 1:n_turn - 1, 0]


def _perturb(module, seed=0, std=0.02):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_the_score_mask_covers_exactly_the_scored_text(tiny_model, tiny_world,
                                                       small_tiny_config, tmp_path, arch):
    model = tiny_model if arch == "llava" else build_tiny(
        tmp_path / arch, TinyConfig(arch=arch, **small_tiny_config))
    rm = _implicit(model)
    items = _items(tiny_world)
    enc = rm.encode(items)
    assert enc["score_mask"].shape == enc["input_ids"].shape
    assert not bool((enc["score_mask"].bool() & ~enc["attention_mask"].bool()).any())
    tok = rm.processor.tokenizer
    for i, scored in enumerate(("Two.", ANSWER.split("Answer: ")[1], QUESTIONS)):
        ids = enc["input_ids"][i][enc["score_mask"][i].bool()]
        text = tok.decode(ids)
        # the scored text and the end-of-turn token, nothing of the prompt before it and
        # nothing the template adds after the turn (the newline SFT never trains on)
        end = "</s>" if arch == "llava" else "<end_of_utterance>"
        assert text.strip() == scored + end, text
        first = int(enc["score_mask"][i].nonzero()[0])
        assert "Question" not in tok.decode(enc["input_ids"][i][first:])
    with pytest.raises(ValueError, match="only the `turns` layout"):
        encode_inputs(rm.processor, items, layout="user", score_mask=True)


def test_scores_are_beta_times_the_log_ratio_of_the_scored_text(tiny_model, tiny_world):
    rm = _implicit(tiny_model, beta=0.5)
    items = _items(tiny_world)
    assert rm.score(items) == [0.0, 0.0, 0.0]  # pi = pi_ref before any training
    _perturb(rm.backbone)
    scores = rm.score(items, batch_size=3)
    assert all(abs(s) > 1e-4 for s in scores)
    # the same number computed another way: the chat template and the model's full logits
    ref = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()

    def answer_logp(model):
        return _answer_token_logps(model, rm.processor, items[1].images[0]).sum().item()

    expected = 0.5 * (answer_logp(rm.backbone) - answer_logp(ref))
    assert scores[1] == pytest.approx(expected, abs=1e-4)
    # padding does not reach the scores: alone or batched, the same
    assert rm.score(items[1:2], batch_size=1) == pytest.approx(scores[1:2], abs=1e-4)


def test_training_saves_policy_and_reference_and_reloads_the_same_scores(
        tiny_model, tiny_world, tmp_path):
    report = train_reward(RewardTrainConfig(
        model=str(tiny_model), annotations=[str(tiny_world / "annotations" / "answers.jsonl")],
        output_dir=str(tmp_path / "rm"), image_root=str(tiny_world), max_steps=3,
        per_device_train_batch_size=4, learning_rate=1e-3, eval_fraction=0.2, seed=1,
        layout="turns", readout="implicit", beta=0.2))
    assert report["readout"] == "implicit" and report["steps"] == 3
    assert report["eval_pairwise_accuracy_before"] == 0.0  # all ties before training
    final = report["final"]
    config = json.loads((tmp_path / "rm" / "final" / "reward_config.json").read_text())
    assert config["readout"] == "implicit" and config["beta"] == 0.2
    start = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    reference = AutoModelForImageTextToText.from_pretrained(
        tmp_path / "rm" / "final" / REFERENCE_DIR).state_dict()
    trained = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    assert all(torch.equal(start[k], reference[k]) for k in start)  # the frozen start
    text = [k for k in start if "language_model" in k]
    assert text and any(not torch.equal(start[k], trained[k]) for k in text)
    rm = VLMRewardModel.from_pretrained(final)
    assert rm.readout == "implicit" and rm.beta == 0.2
    pairs = [json.loads(x) for x in (tmp_path / "rm" / "eval_pairs.jsonl").open()]
    scores = [json.loads(x) for x in (tmp_path / "rm" / "eval_scores.jsonl").open()]
    again = rm.score([RewardInput([tiny_world / pairs[0]["image"]], pairs[0]["better"])])
    assert again[0] == pytest.approx(scores[0]["better_score"], abs=1e-4)
    assert any(s["better_score"] != 0 for s in scores)
    # the head is not part of an implicit reward model
    assert not (tmp_path / "rm" / "final" / "reward_head.safetensors").exists()


def test_lora_uses_the_adapters_off_backbone_as_reference(tiny_model, tiny_world, tmp_path):
    rm = _implicit(tiny_model)
    rm.enable_lora(r=4)
    items = _items(tiny_world)
    assert rm.score(items) == [0.0, 0.0, 0.0]  # LoRA's B starts at zero
    _perturb(rm.backbone, std=0.05)  # moves the adapters and the frozen weights alike
    moved = rm.score(items, batch_size=3)
    rm.save_pretrained(tmp_path / "rm")
    again = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert again.score(items, batch_size=3) == pytest.approx(moved, abs=1e-4)
    # the saved reference is the backbone without its adapters, not the merged one
    ref = load_file(next((tmp_path / "rm" / REFERENCE_DIR).glob("*.safetensors")))
    merged = load_file(next((tmp_path / "rm").glob("model*.safetensors")))
    assert ref.keys() == merged.keys()
    assert any(not torch.equal(ref[k], merged[k]) for k in ref)


def test_bad_readout_settings_are_clear_errors(tiny_model, tiny_world, tmp_path):
    base = dict(model=str(tiny_model), annotations=[str(tiny_world / "annotations" /
                                                        "answers.jsonl")],
                output_dir=str(tmp_path / "rm"), image_root=str(tiny_world), max_steps=1)
    with pytest.raises(ValueError, match="needs layout='turns'"):
        train_reward(RewardTrainConfig(**base, readout="implicit"))
    with pytest.raises(ValueError, match="readout 'mean'"):
        train_reward(RewardTrainConfig(**base, readout="mean"))
    rm = VLMRewardModel.from_backbone(tiny_model)
    rm.save_pretrained(tmp_path / "last")
    with pytest.raises(ValueError, match="cannot continue with readout='implicit'"):
        train_reward(RewardTrainConfig(**(base | {"model": str(tmp_path / "last")}),
                                       readout="implicit", layout="turns"))
    broken = _implicit(tiny_model)
    broken.save_pretrained(tmp_path / "implicit")
    import shutil

    shutil.rmtree(tmp_path / "implicit" / REFERENCE_DIR)
    with pytest.raises(FileNotFoundError, match="needs its reference model"):
        VLMRewardModel.from_pretrained(tmp_path / "implicit")


def test_likelihood_features_are_the_answer_tokens_log_prob_statistics(tiny_model, tiny_world):
    rm = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2,
                                      features=LIKELIHOOD_FEATURES)
    rm.layout = "turns"
    assert not any(p.requires_grad for p in rm.backbone.parameters())
    items = _items(tiny_world)
    feats = rm.likelihood_features_of(items, batch_size=3)
    assert feats.shape == (3, len(LIKELIHOOD_FEATURES))
    logps = _answer_token_logps(rm.backbone, rm.processor, items[1].images[0])
    end = _answer_token_logps(rm.backbone, rm.processor, items[1].images[0], end_token=True)
    assert end[-1].item() == pytest.approx(logps[-1].item())  # the last scored token is </s>
    # end: the log-prob of </s> where the answer ends; early_end: the most the model
    # expected </s> at any token before it
    expected = [logps.sum().item(), logps.mean().item(), logps.min().item(), len(logps),
                logps[-1].item(), end[:-1].max().item(),
                NO_LINE_PAIR, NO_ANSWER_PAIR]  # one line: no pair
    assert feats[1].tolist() == pytest.approx(expected, abs=1e-4)
    # alone or padded in a batch, the same features; the score is the head of them
    assert rm.likelihood_features_of(items[1:2])[0].tolist() == pytest.approx(expected, abs=1e-4)
    with torch.no_grad():
        assert rm.score(items, batch_size=3) == pytest.approx(rm.head(feats).tolist(), abs=1e-5)


def test_likelihood_features_are_chosen_by_name_and_saved(tiny_model, tiny_world, tmp_path):
    """The head reads the four statistics unless others are named; the names are saved, and
    a config from before they were (no `likelihood_features`) reads those four."""
    items = _items(tiny_world)
    every = VLMRewardModel.from_backbone(tiny_model, readout="likelihood",
                                         features=LIKELIHOOD_FEATURES)
    every.layout = "turns"
    full = every.likelihood_features_of(items)
    rm = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2)
    rm.layout = "turns"
    assert rm.features == DEFAULT_LIKELIHOOD_FEATURES == LIKELIHOOD_FEATURES[:4]
    torch.testing.assert_close(rm.likelihood_features_of(items), full[:, :4])
    rm.save_pretrained(tmp_path / "rm")
    config_file = tmp_path / "rm" / "reward_config.json"
    config = json.loads(config_file.read_text())
    assert config["likelihood_features"] == list(DEFAULT_LIKELIHOOD_FEATURES)
    del config["likelihood_features"]  # a config from before the key
    config_file.write_text(json.dumps(config))
    old = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert old.features == DEFAULT_LIKELIHOOD_FEATURES
    assert old.score(items) == pytest.approx(rm.score(items), abs=1e-5)
    # a subset in another order reads those columns, and is what a reload reads
    some = VLMRewardModel.from_backbone(tiny_model, readout="likelihood",
                                        features=["early_end", "min"])
    some.layout = "turns"
    torch.testing.assert_close(some.likelihood_features_of(items), full[:, [5, 2]])
    some.save_pretrained(tmp_path / "some")
    again = VLMRewardModel.from_pretrained(tmp_path / "some")
    assert again.features == ("early_end", "min")
    assert again.score(items) == pytest.approx(some.score(items), abs=1e-5)
    with pytest.raises(ValueError, match="likelihood features must be distinct names"):
        VLMRewardModel.from_backbone(tiny_model, readout="likelihood", features=["max"])
    # end/early_end read the end-of-turn token: not with the pre-session-20 span
    some_config = tmp_path / "some" / "reward_config.json"
    some_config.write_text(json.dumps({**json.loads(some_config.read_text()),
                                       "scored_span": "to_end"}))
    with pytest.raises(ValueError, match="need scored_span 'turn'"):
        VLMRewardModel.from_pretrained(tmp_path / "some")


def _line_state(model, processor, image, line: str) -> torch.Tensor:
    """The last hidden state after `line` asked alone with the image, apart from the reward
    model's code: the template by hand, one input, no padding."""
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\n" + line}]}]
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=[[load_image(image)]], return_tensors="pt")
    with torch.no_grad():
        return model(**enc, output_hidden_states=True).hidden_states[-1][0, -1].float()


def test_redundancy_is_the_closest_pair_of_lines_each_read_alone(tiny_model, tiny_world,
                                                                 tmp_path):
    rm = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2,
                                      features=["mean", "redundancy"])
    rm.layout = "turns"
    image = _items(tiny_world)[2].images[0]
    lines = ["What color is the ring?", "Is there a cross?", "How many shapes are there?"]
    states = [_line_state(rm.backbone, rm.processor, image, q) for q in lines]
    cos = torch.nn.functional.cosine_similarity
    items = [RewardInput([image], "\n".join(lines)), RewardInput([image], lines[0]),
             RewardInput([image], "\n".join(lines[:2] + [lines[0]])),  # asks one thing twice
             RewardInput([image], "\n".join(lines[:2]))]
    feats = rm.likelihood_features_of(items, batch_size=2)
    closest = max(cos(states[i], states[j], dim=0).item() for i, j in [(0, 1), (0, 2), (1, 2)])
    assert feats[:, 1].tolist() == pytest.approx(
        [closest, NO_LINE_PAIR, 1.0, cos(states[0], states[1], dim=0).item()], abs=1e-4)
    # the token statistics are the same as without the line feature
    plain = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", features=["mean"])
    plain.layout = "turns"
    torch.testing.assert_close(feats[:, :1], plain.likelihood_features_of(items))
    with torch.no_grad():
        assert rm.score(items, batch_size=3) == pytest.approx(rm.head(feats).tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="read the scored texts' lines"):
        rm(**rm.encode(items))  # an encoded batch has no lines to read
    # another VLM may read the lines; it is saved with the head and reloaded
    reader = AutoModelForImageTextToText.from_pretrained(tiny_model)
    _perturb(reader, std=0.05)
    reader.save_pretrained(tmp_path / "reader")
    rm.processor.save_pretrained(tmp_path / "reader")
    other = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2,
                                         features=["mean", "redundancy"],
                                         line_reader=tmp_path / "reader")
    other.layout = "turns"
    theirs = other.likelihood_features_of(items)
    torch.testing.assert_close(theirs[:, :1], feats[:, :1])  # the backbone reads the tokens
    assert theirs[3, 1].item() == pytest.approx(cos(
        *[_line_state(reader, rm.processor, image, q) for q in lines[:2]], dim=0).item(),
        abs=1e-4)
    assert theirs[3, 1].item() != pytest.approx(feats[3, 1].item(), abs=1e-4)
    other.save_pretrained(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["line_reader"]
    again = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert again.score(items) == pytest.approx(other.score(items), abs=1e-5)
    import shutil

    shutil.rmtree(tmp_path / "rm" / LINE_READER_DIR)
    with pytest.raises(FileNotFoundError, match="need its line reader"):
        VLMRewardModel.from_pretrained(tmp_path / "rm")
    with pytest.raises(ValueError, match="only by the likelihood readout's line features"):
        VLMRewardModel.from_backbone(tiny_model, readout="likelihood", features=["mean"],
                                     line_reader=tmp_path / "reader")


def test_answer_redundancy_asks_whether_one_lines_answer_fits_another_line(tiny_model,
                                                                          tiny_world):
    """`answer_redundancy`: each line's greedy answer from the line reader, then the highest
    gap between that answer's mean log-prob after another line and after its own; all
    recomputed here with the template by hand, unbatched."""
    rm = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2,
                                      features=["answer_redundancy"])
    rm.layout = "turns"
    _perturb(rm.backbone, seed=3, std=0.05)  # so that the lines get different answers
    image = _items(tiny_world)[2].images[0]
    lines = ["What color is the ring?", "Is there a cross?", "How many shapes are there?"]
    answers = []
    for line in lines:
        msgs = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "\n" + line}]}]
        prompt = rm.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        enc = rm.processor(text=[prompt], images=[[load_image(image)]], return_tensors="pt")
        with torch.no_grad():
            ids = rm.backbone.generate(**enc, max_new_tokens=LINE_ANSWER_TOKENS, do_sample=False)
        answers.append(rm.processor.decode(ids[0, enc["input_ids"].shape[1]:],
                                           skip_special_tokens=True).strip())
    assert rm.line_answers([([image], line) for line in lines], batch_size=2) == answers
    assert len(set(answers)) > 1

    def fit(i, j):  # answer j after line i, mean log-prob per token
        return _answer_token_logps(rm.backbone, rm.processor, image,
                                   text=answer_text(lines[i], answers[j])).mean().item()

    def expected(idx):
        return max(fit(i, j) - fit(j, j) for a, i in enumerate(idx) for b, j in enumerate(idx)
                   if a != b)

    items = [RewardInput([image], "\n".join(lines)), RewardInput([image], lines[0]),
             RewardInput([image], "\n".join(lines[:2] + [lines[0]])),  # asks one thing twice
             RewardInput([image], "\n".join(lines[1:]))]
    feats = rm.likelihood_features_of(items, batch_size=2)
    assert feats[:, 0].tolist() == pytest.approx(
        [expected([0, 1, 2]), NO_ANSWER_PAIR, expected([0, 1, 0]), expected([1, 2])], abs=1e-4)
    assert feats[2, 0] >= 0.0  # a line asked twice: its answer fits its twin exactly


def test_the_lines_head_reads_each_lines_token_statistics(tiny_model, tiny_world, tmp_path):
    """`likelihood_head="lines"`: the text's features, then each line's LINE_STATISTICS of the
    same scored tokens; scored alike from texts and from an encoded batch; saved and reloaded."""
    rm = VLMRewardModel.from_backbone(tiny_model, readout="likelihood", seed=2,
                                      features=["sum", "tokens"], likelihood_head="lines")
    rm.layout = "turns"
    items = _items(tiny_world)
    feats = rm.likelihood_features_of(items, batch_size=3)
    n = len(LINE_STATISTICS)
    assert feats.shape == (3, 2 + 2 * n)  # QUESTIONS has the most lines: two
    logps = _answer_token_logps(rm.backbone, rm.processor, items[1].images[0])
    after = logps[1:]
    assert feats[1, 2:2 + n].tolist() == pytest.approx(
        [logps.sum().item(), logps.mean().item(), logps.min().item(), len(logps),
         after.min().item(), logps[-1].item(), after.sort().values[len(after) // 2].item()],
        abs=1e-4)  # ANSWER's answer is one line; no second one
    assert feats[1, 2 + n:].isnan().all() and feats[0, 2 + n:].isnan().all()
    two = feats[2, 2:].reshape(2, n)  # the two questions' lines add up to the text
    assert two[:, 0].sum().item() == pytest.approx(feats[2, 0].item(), abs=1e-4)
    assert two[:, 3].sum().item() == feats[2, 1].item()
    set_head = VLMRewardModel.from_backbone(tiny_model, readout="likelihood",
                                            features=["sum", "tokens"])
    set_head.layout = "turns"
    torch.testing.assert_close(feats[:, :2], set_head.likelihood_features_of(items))
    with torch.no_grad():
        scores = rm.score(items, batch_size=2)  # batches of other widths
        assert scores == pytest.approx(rm.head(feats).tolist(), abs=1e-5)
        assert rm(**rm.encode(items)).tolist() == pytest.approx(scores, abs=1e-5)
    rm.save_pretrained(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())[
        "likelihood_head"] == "lines"
    again = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert again.likelihood_head == "lines" and again.score(items) == pytest.approx(scores,
                                                                                   abs=1e-5)
    with pytest.raises(ValueError, match="likelihood head 'line'"):
        VLMRewardModel.from_backbone(tiny_model, readout="likelihood", likelihood_head="line")
    with pytest.raises(ValueError, match="is the likelihood readout's"):
        VLMRewardModel.from_backbone(tiny_model, likelihood_head="lines")


def test_rewrite_log_likelihood_scores_the_same_span_as_the_readouts(tiny_model, tiny_world):
    """The rewrite's perplexity (and the bench's backbone judge, through `answer_loglik`)
    score an answer and its end of turn, like the readouts: not the template's newline."""
    from transformers import AutoProcessor

    from mmalign.curate.rewrite import answer_loglik

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    image = _items(tiny_world)[1].images[0]
    got = answer_loglik(model, processor, str(image.relative_to(tiny_world)),
                        "Where is the star?", ANSWER.split("Answer: ")[1], tiny_world)
    assert got == pytest.approx(_answer_token_logps(model, processor, image).sum().item(),
                                abs=1e-3)


def test_likelihood_training_fits_the_head_and_leaves_the_backbone(tiny_model, tiny_world,
                                                                  tmp_path):
    report = train_reward(RewardTrainConfig(
        model=str(tiny_model), annotations=[str(tiny_world / "annotations" / "answers.jsonl")],
        output_dir=str(tmp_path / "rm"), image_root=str(tiny_world), max_steps=50,
        per_device_train_batch_size=16, learning_rate=1e-2, eval_fraction=0.2, seed=1,
        layout="turns", readout="likelihood", head_hidden=8, logging_steps=10))
    assert report["readout"] == "likelihood" and report["steps"] == 50
    assert report["first_logged_loss"] > report["last_logged_loss"]  # the fit fits
    final = tmp_path / "rm" / "final"
    start = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    saved = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    assert all(torch.equal(start[k], saved[k]) for k in start)  # the backbone is only read
    rm = VLMRewardModel.from_pretrained(final)
    assert rm.readout == "likelihood" and rm.head_hidden == 8
    # the standardisation is the training texts' features' (the count of tokens is >= 1)
    assert float(rm.head.feature_mean[3]) >= 1 and float(rm.head.feature_std[3]) > 0
    pairs = [json.loads(x) for x in (tmp_path / "rm" / "eval_pairs.jsonl").open()]
    scores = [json.loads(x) for x in (tmp_path / "rm" / "eval_scores.jsonl").open()]
    again = rm.score([RewardInput([tiny_world / p["image"]], p["worse"]) for p in pairs[:3]])
    assert again == pytest.approx([s["worse_score"] for s in scores[:3]], abs=1e-4)
    # saved RMs score the turn (text and end of turn); one saved before that rule (no
    # `scored_span` in its config) keeps scoring to the end, as it was trained
    config_file = final / "reward_config.json"
    config = json.loads(config_file.read_text())
    assert config["scored_span"] == "turn" and rm.scored_span == "turn"
    assert config["likelihood_features"] == list(DEFAULT_LIKELIHOOD_FEATURES)
    del config["scored_span"], config["likelihood_features"]
    config_file.write_text(json.dumps(config))
    old = VLMRewardModel.from_pretrained(final)
    assert old.scored_span == "to_end"
    items = [RewardInput([tiny_world / p["image"]], p["worse"]) for p in pairs[:2]]
    turn, to_end = rm.encode(items)["score_mask"], old.encode(items)["score_mask"]
    assert bool((turn <= to_end).all()) and bool((to_end.sum(-1) > turn.sum(-1)).all())
    assert old.score(items) != pytest.approx(rm.score(items), abs=1e-4)
    config_file.write_text(json.dumps({**config, "scored_span": "all"}))
    with pytest.raises(ValueError, match="scored span 'all'"):
        VLMRewardModel.from_pretrained(final)
    config_file.write_text(json.dumps({**config, "scored_span": "turn"}))
    # training on from a saved RM keeps what it reads
    with pytest.raises(ValueError, match="cannot continue with likelihood_features"):
        train_reward(RewardTrainConfig(
            model=str(final), annotations=[str(tiny_world / "annotations" / "answers.jsonl")],
            output_dir=str(tmp_path / "more"), image_root=str(tiny_world), layout="turns",
            readout="likelihood", likelihood_features=["min", "early_end"]))
    with pytest.raises(ValueError, match="RewardTrainConfig.likelihood_features"):
        train_reward(RewardTrainConfig(
            model=str(tiny_model), annotations=[str(tiny_world / "annotations" /
                                                    "answers.jsonl")],
            output_dir=str(tmp_path / "bad"), image_root=str(tiny_world), layout="turns",
            readout="likelihood", likelihood_features=["sum", "sum"]))
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="likelihood readout never trains the backbone"):
        train_reward(RewardTrainConfig(
            model=str(tiny_model), annotations=[str(tiny_world / "annotations" /
                                                    "answers.jsonl")],
            output_dir=str(tmp_path / "bad"), image_root=str(tiny_world), layout="turns",
            readout="likelihood", lora=True))


def test_the_lines_head_trains_on_question_sets_and_reloads(tiny_model, tiny_world, tmp_path):
    cfg = RewardTrainConfig(
        model=str(tiny_model), annotations=[str(tiny_world / "annotations" / "questions.jsonl")],
        output_dir=str(tmp_path / "rm"), image_root=str(tiny_world), max_steps=50,
        per_device_train_batch_size=16, learning_rate=1e-2, eval_fraction=0.2, seed=1,
        layout="turns", readout="likelihood", head_hidden=8, logging_steps=10,
        likelihood_features=["mean"], likelihood_head="lines")
    report = train_reward(cfg)
    assert report["first_logged_loss"] > report["last_logged_loss"]  # the fit fits
    final = tmp_path / "rm" / "final"
    rm = VLMRewardModel.from_pretrained(final)
    assert rm.likelihood_head == "lines"
    # the lines' standardisation is the training lines' (a question has >= 1 token)
    assert float(rm.head.line_mean[3]) >= 1 and float(rm.head.feature_mean[1]) >= 1
    pairs = [json.loads(x) for x in (tmp_path / "rm" / "eval_pairs.jsonl").open()]
    scores = [json.loads(x) for x in (tmp_path / "rm" / "eval_scores.jsonl").open()]
    again = rm.score([RewardInput([tiny_world / p["image"]], p["better"]) for p in pairs[:3]])
    assert again == pytest.approx([s["better_score"] for s in scores[:3]], abs=1e-4)
    from dataclasses import replace

    with pytest.raises(ValueError, match="cannot continue with likelihood_head='set'"):
        train_reward(replace(cfg, model=str(final), output_dir=str(tmp_path / "more"),
                             likelihood_head="set"))
    with pytest.raises(ValueError, match="is the likelihood readout's"):
        train_reward(replace(cfg, readout="last", output_dir=str(tmp_path / "last")))
