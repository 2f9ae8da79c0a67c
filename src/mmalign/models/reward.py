"""A reward model: any HF vision-language model plus a scalar head at the last real token, or
the model's own implicit reward.

    rm = VLMRewardModel.from_backbone("path/or/hub-id")       # a fresh, randomly set head
    rm.enable_lora(r=16)                                     # optional: LoRA on the LM
    scores = rm.score([RewardInput(["img.png"], "Question: q\\nAnswer: a")])
    rm.save_pretrained("rm/")                                # merged backbone + head
    rm = VLMRewardModel.from_pretrained("rm/")

The text is run through the model's own chat template and processor, so each family puts its
image tokens where it expects them, in one of two layouts:
- `user` (the paper's): the whole text in one user turn with the image(s);
- `turns`: the scored text as the assistant's turn, after a user turn holding the image(s) and,
  for an answer RM's "Question: q\nAnswer: a", the question. The text is then where the model
  learnt to read answers against the image. A template that puts the image after the user's
  text (the tiny model's, question first) leaves no text of the `user` layout able to attend
  to the image: only the tokens after it can, and the head has to do all the checking there.

The backbone's language model gives hidden states (B, T, H); the head reads the state of the
last non-padding token, found from the attention mask (so left and right padding
both work): s = w . h_last + b. This is the released Align2LLaVA reward model's design (a
LLaVA with a bias-free `score` layer read at the sequence end); we keep a bias, which the
pairwise loss ignores.

Three readouts:
- `last` (the paper's): the linear head below.
- `implicit`: no head; the score is beta * (log pi(y|x) - log pi_ref(y|x)) summed over the
  scored text's tokens and its end of turn (the assistant turn of the `turns` layout, as SFT
  trains it: not what the template adds after it), pi the trained backbone and
  pi_ref a frozen copy of it as it started (with LoRA: the backbone with its adapters off).
  The pairwise loss on this score is the DPO loss (Rafailov et al., 2023, "your language
  model is secretly a reward model"). It reads the answer through the LM head, where a tiny
  backbone already knows which word should come next; the last-token head has to learn to
  carry "this word was not the one predicted" to the end of the text (docs/LOG.md session
  14), which the tiny default does not learn. Not the paper's design: an option beside it.
- `likelihood`: a small MLP over statistics of the frozen backbone's token log-probabilities
  of the scored text (`turns` layout): their sum, mean and minimum and the token count; as
  an option also the log-prob of the end-of-turn token where the text ends (`end`) and the
  highest log-prob the model gave the end of turn at any earlier token (`early_end`). A
  wrong word is a token the model did not expect (a low minimum); a cut answer ends where
  the model expected more; a padded answer goes on where the model was sure the turn was
  over (an `early_end` near 0). The MLP learns how the annotators weigh these. The backbone is
  not trained, so the head is fitted on features computed once (`fit_likelihood_head`).
  The statistics are the usual token-probability features of hallucination detection
  (e.g. Manakul et al., 2023, SelfCheckGPT's avg and max -log p). Not the paper's design.
  One opt-in feature reads the text's lines instead of its tokens: `redundancy`, the highest
  cosine similarity between two lines' states, each line read alone as the user's question
  with the image, the state where the answer would begin (a line reader's last hidden state:
  the backbone, or another VLM saved with the head in `line_reader/`). A question set that
  asks one thing twice in other words has two lines the reader would answer alike; read in
  place, the repeat is just a likely line (docs/results.md, sessions 23 and 24). Cosines of
  states mistake two lines of one template ("Where is the square?", "Where is the
  hexagon?") for a repeat; `answer_redundancy` asks the reader instead: it answers each line
  (greedy), and two lines ask the same thing when each one's answer is as likely after the
  other line as after its own (docs/results.md, session 28).

A saved reward model is a plain HF model folder (LoRA merged in) with the processor, plus
`reward_head.safetensors` and `reward_config.json`; any tool can still load the backbone. An
implicit reward model has no head file and keeps its reference model in `reference/`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmalign.train.logps import (
    align,
    reduce_logps,
    response_window,
    through_turn_text,
    token_logps,
)

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"
REFERENCE_DIR = "reference"
FORMAT_VERSION = 1
LINE_READER_DIR = "line_reader"
READOUTS = ("last", "implicit", "likelihood")
LIKELIHOOD_FEATURES = ("sum", "mean", "min", "tokens", "end", "early_end", "redundancy",
                       "answer_redundancy")
# Features read from the items' texts (their lines), not from one encoded batch; both are
# read by the line reader.
LINE_FEATURES = ("redundancy", "answer_redundancy")
# `redundancy` of a text of one line, which has no pair of lines: below any cosine.
NO_LINE_PAIR = -1.0
# `answer_redundancy` of a text of one line, and the floor of every other: a gap in mean
# log-prob per token below any pair of real lines (-4.7 nats the lowest seen on the world's
# question sets), kept finite for the head's standardisation.
NO_ANSWER_PAIR = -10.0
# The most tokens of a line reader's answer to one line (`line_answers`).
LINE_ANSWER_TOKENS = 32
# The head's inputs unless others are chosen, and what a saved config without
# `likelihood_features` (from before session 21) read. end and early_end are opt-in: they
# tell a padded answer from its clean one without fail (early_end -0.00 against a median of
# -10.9 nats, 120 held-out pairs), but on the world's annotations, where a padded answer (0.55)
# beats every factual error, the head learns to score padding up: held out 0.779 against
# 0.794, and more padded answers kept by the cascade (docs/results.md, session 21).
DEFAULT_LIKELIHOOD_FEATURES = LIKELIHOOD_FEATURES[:4]
# The `lines` head's statistics of each line of the scored text (a line ends at a token that
# holds a newline, the last one at the scored span's end): its tokens' log-prob sum, mean,
# minimum, count, the minimum after the line's first token (which starts a new question
# and is hard to predict whatever the line), the last token's, and the median after the first.
LINE_STATISTICS = ("sum", "mean", "min", "tokens", "min_after_first", "last", "median")
# How the likelihood head reads a text: `set`, an MLP over the text's features; `lines`, the
# mean over the text's lines of an MLP over each line's LINE_STATISTICS, plus an MLP over the
# text's features and its line count (docs/results.md, session 26: on the world's question
# sets, one spoiled line no longer sets the whole set's minimum).
LIKELIHOOD_HEADS = ("set", "lines")
# `early_end` of a one-token text, which has no earlier token: a log-prob no real
# end-of-turn prediction reaches, kept finite for the head's standardisation.
NO_EARLY_END = -50.0


@dataclass
class RewardInput:
    """One thing to score: images (absolute paths, or PIL images) and the text about them."""

    images: list[Any]
    text: str


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row. (B, T) -> (B,)

    Works for right padding (the usual case) and left padding alike; a row with no real
    token gets index T-1 (it cannot happen with a chat template, which always adds text).
    """
    t = attention_mask.shape[1]
    return t - 1 - attention_mask.flip(-1).to(torch.long).argmax(-1)


def pairwise_loss(better: torch.Tensor, worse: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry loss of the paper: mean of -log sigmoid(s_better - s_worse); with
    `weight` (summing to 1), the weighted sum instead."""
    losses = -nn.functional.logsigmoid(better - worse)
    return losses.mean() if weight is None else (losses * weight.to(losses.dtype)).sum()


def pairwise_accuracy(better: Sequence[float], worse: Sequence[float]) -> float:
    """Share of pairs ranked right (a tie counts as wrong)."""
    if len(better) != len(worse):
        raise ValueError(f"{len(better)} better scores for {len(worse)} worse ones")
    if not better:
        return float("nan")
    return sum(b > w for b, w in zip(better, worse, strict=True)) / len(better)


def language_model_of(backbone: nn.Module) -> nn.Module | None:
    """The module giving hidden states without the LM head (`XForConditionalGeneration.model`
    in transformers 5: LlavaModel, Idefics3Model, Qwen2VLModel, ...), or None."""
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else None


class VLMRewardModel(nn.Module):
    """Backbone VLM + linear head (`num_outputs` scores; 1 for a scalar reward)."""

    # Read by HF Trainer: forward's **vision are pixel inputs, not loss kwargs such as
    # num_items_in_batch (the pairwise loss is computed outside, in compute_loss).
    accepts_loss_kwargs = False

    def __init__(self, backbone: nn.Module, processor: Any, *, num_outputs: int = 1,
                 base_model: str = "", info: dict[str, Any] | None = None,
                 readout: str = "last", beta: float = 0.1,
                 reference: nn.Module | None = None, head_hidden: int = 32,
                 features: Sequence[str] = DEFAULT_LIKELIHOOD_FEATURES,
                 line_reader: tuple[nn.Module, Any] | None = None,
                 likelihood_head: str = "set"):
        super().__init__()
        self.readout = check_readout(readout)
        if readout != "last" and num_outputs != 1:
            raise ValueError(f"the {readout} readout gives one score; num_outputs must be 1")
        self.beta = beta  # implicit readout: score = beta * (log pi - log pi_ref)
        self.backbone = backbone
        self.processor = processor
        hidden = backbone.config.get_text_config().hidden_size
        # The likelihood head's inputs, in order (a subset of LIKELIHOOD_FEATURES).
        self.features = check_features(features)
        self.likelihood_head = check_likelihood_head(likelihood_head, readout)
        head_class = LineHead if likelihood_head == "lines" else LikelihoodHead
        self.head = (head_class(head_hidden, len(self.features)) if readout == "likelihood"
                     else nn.Linear(hidden, num_outputs))
        object.__setattr__(self, "_newline_ids", None)  # (V,) bool, built when first read
        self.head_hidden = head_hidden
        self.hidden_size = hidden
        if readout == "likelihood":  # read, never trained
            backbone.requires_grad_(False)
        self.num_outputs = num_outputs
        self.base_model = base_model
        self.info = dict(info or {})  # saved with the head: kind (question/answer), training
        self.max_length: int | None = None
        self.layout = "user"  # or "turns" (see the module docstring)
        # Which tokens the implicit and likelihood readouts score (`_scored_tokens`): "turn",
        # the scored text and its end-of-turn token; "to_end", everything after the prompt,
        # the template's trailing newline included, as reward models saved before session 20
        # were trained (their config has no `scored_span`, and they keep scoring that way).
        self.scored_span = "turn"
        # The PEFT wrapper while LoRA is on; kept out of the module tree so parameters are
        # not registered twice (LoRA layers live inside `backbone` itself).
        object.__setattr__(self, "_peft", None)
        # The implicit readout's frozen reference, also out of the tree: the Trainer's
        # checkpoints and optimiser then hold the trained model only (`_apply` moves it).
        if reference is not None:
            reference.eval().requires_grad_(False)
        object.__setattr__(self, "_reference", reference)
        if readout == "implicit" and reference is None:
            raise ValueError("the implicit readout needs a reference model")
        # LINE_FEATURES' reader of single lines, (model, processor), frozen and out of the
        # tree like the reference; None: the backbone reads them.
        if line_reader is not None:
            if readout != "likelihood" or not set(LINE_FEATURES) & set(self.features):
                raise ValueError("a line reader is read only by the likelihood readout's "
                                 f"line features {LINE_FEATURES}")
            line_reader[0].eval().requires_grad_(False)
        object.__setattr__(self, "_line_reader", line_reader)

    def _apply(self, fn, recurse=True):  # .to(), .float(), ...: the frozen models follow
        super()._apply(fn, recurse)
        for other in (self._reference, self._line_reader and self._line_reader[0]):
            if other is not None:
                other._apply(fn, recurse)
        return self

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike, *, num_outputs: int = 1,
                      dtype: str | None = "fp32", device: str | None = None, seed: int = 0,
                      trust_remote_code: bool = False, readout: str = "last",
                      beta: float = 0.1, head_hidden: int = 32,
                      features: Sequence[str] = DEFAULT_LIKELIHOOD_FEATURES,
                      line_reader: str | os.PathLike | None = None,
                      likelihood_head: str = "set") -> VLMRewardModel:
        """A reward model on a pretrained VLM, with a freshly initialised head (seeded); for the
        implicit readout, a second copy of the VLM as the frozen reference. `features`: the
        likelihood head's inputs; `line_reader`: the VLM that reads single lines for the
        redundancy feature (default: the backbone); `likelihood_head`: LIKELIHOOD_HEADS."""
        from mmalign.models.load import load_vlm

        backbone, processor = load_vlm(name_or_path, dtype=dtype, device=device,
                                       trust_remote_code=trust_remote_code)
        reference = None
        if check_readout(readout) == "implicit":  # the start, frozen: a copy, not a reload
            import copy

            reference = copy.deepcopy(backbone)
        reader = None
        if line_reader is not None:
            reader = load_vlm(line_reader, dtype=dtype, device=device,
                              trust_remote_code=trust_remote_code)
        rm = cls(backbone, processor, num_outputs=num_outputs, base_model=str(name_or_path),
                 readout=readout, beta=beta, reference=reference, head_hidden=head_hidden,
                 features=features, line_reader=reader, likelihood_head=likelihood_head)
        gen = torch.Generator().manual_seed(seed)
        std = getattr(backbone.config.get_text_config(), "initializer_range", 0.02)
        with torch.no_grad():
            if readout == "likelihood":
                rm.head.reset(gen)
            else:
                rm.head.weight.copy_(torch.randn(rm.head.weight.shape, generator=gen) * std)
                rm.head.bias.zero_()
        return rm.to(backbone.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: str | None = "fp32",
                        device: str | None = None) -> VLMRewardModel:
        from safetensors.torch import load_file

        from mmalign.models.load import load_vlm

        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a saved reward model (needs {CONFIG_FILE}; "
                                    f"train one with `mmalign curate reward`)")
        cfg = json.loads((path / CONFIG_FILE).read_text())
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: reward model format {cfg.get('format_version')!r}, this "
                             f"version reads {FORMAT_VERSION}")
        backbone, processor = load_vlm(path, dtype=dtype, device=device)
        readout = check_readout(cfg.get("readout", "last"), path / CONFIG_FILE)
        reference = None
        if readout == "implicit":
            if not (path / REFERENCE_DIR).is_dir():
                raise FileNotFoundError(f"{path}: an implicit reward model needs its reference "
                                        f"model in {path / REFERENCE_DIR}")
            reference = load_vlm(path / REFERENCE_DIR, dtype=dtype, device=device)[0]
        reader = None
        if cfg.get("line_reader"):
            if not (path / LINE_READER_DIR).is_dir():
                raise FileNotFoundError(f"{path}: this reward model's line features need "
                                        f"its line reader in {path / LINE_READER_DIR}")
            reader = load_vlm(path / LINE_READER_DIR, dtype=dtype, device=device)
        rm = cls(backbone, processor, num_outputs=cfg["num_outputs"],
                 base_model=cfg.get("base_model", ""), info=cfg.get("info", {}),
                 readout=readout, beta=cfg.get("beta", 0.1), reference=reference,
                 head_hidden=cfg.get("head_hidden", 32),
                 features=_saved_features(cfg, path / CONFIG_FILE), line_reader=reader,
                 likelihood_head=check_likelihood_head(  # the error names the file
                     cfg.get("likelihood_head", "set"), readout, path / CONFIG_FILE))
        rm.max_length = cfg.get("max_length")
        rm.layout = check_layout(cfg.get("layout", "user"), path / CONFIG_FILE)
        rm.scored_span = check_span(cfg.get("scored_span", "to_end"), path / CONFIG_FILE)
        rm.check_features_span(path / CONFIG_FILE)
        if readout != "implicit":
            rm.head.load_state_dict(load_file(path / HEAD_FILE))
        return rm.to(backbone.device).eval()

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write backbone (LoRA merged in), processor, head and config to `path`.

        With LoRA on, saving merges the adapters into the backbone for good (the model stays
        usable for scoring; training after it continues in full, not LoRA).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._peft is not None:
            if self.readout == "implicit":  # the adapters-off backbone was the reference
                object.__setattr__(self, "_reference", self._lora_reference_copy())
            self.backbone = self._peft.merge_and_unload()
            object.__setattr__(self, "_peft", None)
        self.backbone.save_pretrained(path)
        self.processor.save_pretrained(path)
        if self.readout == "implicit":
            self._reference.save_pretrained(path / REFERENCE_DIR)  # a whole model folder,
            self.processor.save_pretrained(path / REFERENCE_DIR)  # loadable on its own
        else:
            save_file({k: v.detach().contiguous().cpu()
                       for k, v in self.head.state_dict().items()}, path / HEAD_FILE)
        if self._line_reader is not None:  # a whole model folder too
            self._line_reader[0].save_pretrained(path / LINE_READER_DIR)
            self._line_reader[1].save_pretrained(path / LINE_READER_DIR)
        (path / CONFIG_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "num_outputs": self.num_outputs,
            "hidden_size": self.hidden_size, "base_model": self.base_model,
            "max_length": self.max_length, "layout": self.layout, "readout": self.readout,
            "scored_span": self.scored_span, "likelihood_features": list(self.features),
            "likelihood_head": self.likelihood_head,
            "beta": self.beta, "head_hidden": self.head_hidden, "info": self.info,
            "line_reader": self._line_reader is not None},
            indent=2) + "\n")
        return path

    def _lora_reference_copy(self) -> nn.Module:
        """The backbone as it was before LoRA (a copy with the adapters' layers taken out),
        before the adapters are merged for good."""
        import copy

        return copy.deepcopy(self._peft).unload().eval().requires_grad_(False)

    # ------------------------------------------------------------------ training set-up

    def enable_lora(self, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                    target_modules: str | list[str] = "all-linear") -> None:
        """LoRA on the language model and projector (vision tower frozen); the head trains in
        full. `all-linear` is resolved as in SFT (`mmalign.train.sft`)."""
        from peft import LoraConfig, get_peft_model

        from mmalign.train.sft import _lora_targets

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=_lora_targets(self.backbone, target_modules))
        # get_peft_model swaps LoRA layers into `backbone` in place and freezes the rest.
        object.__setattr__(self, "_peft", get_peft_model(self.backbone, config))
        # The implicit readout's reference is now the backbone with its adapters off.
        object.__setattr__(self, "_reference", None)

    def freeze_vision_tower(self) -> None:
        from mmalign.train.sft import _vision_tower

        for p in _vision_tower(self.backbone).parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                score_mask: torch.Tensor | None = None, **vision: Any) -> torch.Tensor:
        """Scores (B,) for a scalar head, else (B, num_outputs). `score_mask` (B, T): 1 on the
        scored text's tokens, needed by the implicit readout (`encode` gives it)."""
        if self.readout == "implicit":
            return self._implicit_scores(input_ids, attention_mask, score_mask, vision)
        if self.readout == "likelihood":  # (score() also reads LINE_FEATURES)
            return self.head(self.likelihood_features(input_ids, attention_mask, score_mask,
                                                      **vision))
        inner = language_model_of(self.backbone)
        if inner is not None:
            hidden = inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                           **vision).last_hidden_state
        else:  # a family without `.model`: ask the full model for its hidden states
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False, output_hidden_states=True,
                                   **vision).hidden_states[-1]
        idx = last_token_index(attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (B, H)
        scores = self.head(last.to(self.head.weight.dtype))  # (B, num_outputs)
        return scores.squeeze(-1) if self.num_outputs == 1 else scores

    def _scored_logits(self, model: nn.Module, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, score_mask: torch.Tensor | None,
                       vision: dict[str, Any]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`model`'s logits over the scored tokens (the LM head run only over them), lined
        up with the tokens they predict: (logits [B, K-1, V], labels, mask [B, K-1])."""
        if score_mask is None:
            raise ValueError(f"the {self.readout} readout needs score_mask: encode the inputs "
                             f"with score_mask=True (VLMRewardModel.encode does)")
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=response_window(score_mask), **vision).logits
        return align(logits, input_ids, score_mask)

    def _scored_logps(self, model: nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, score_mask: torch.Tensor | None,
                      vision: dict[str, Any]) -> torch.Tensor:
        """Sum of the scored tokens' log-probs under `model`: [B]."""
        logits, labels, mask = self._scored_logits(model, input_ids, attention_mask,
                                                   score_mask, vision)
        return reduce_logps(token_logps(logits, labels), mask)

    @torch.no_grad()
    def likelihood_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            score_mask: torch.Tensor | None, **vision: Any) -> torch.Tensor:
        """(B, F) statistics of the backbone's log-probs of the scored tokens, the columns
        `self.features` (LIKELIHOOD_FEATURES: sum, mean, min, token count, end, early_end).
        LINE_FEATURES need the texts: `likelihood_features_of` reads them. With the `lines`
        head, each line's LINE_STATISTICS follow (`LineHead`'s layout)."""
        return self._token_features(self.features, input_ids, attention_mask, score_mask,
                                    lines=self.likelihood_head == "lines", **vision)

    def _token_features(self, names: Sequence[str], input_ids: torch.Tensor,
                        attention_mask: torch.Tensor, score_mask: torch.Tensor | None = None,
                        *, lines: bool = False, **vision: Any) -> torch.Tensor:
        """The columns `names` of `likelihood_features` (none of LINE_FEATURES): (B, F);
        with `lines`, then each line's LINE_STATISTICS, NaN past a text's last line:
        (B, F + L * len(LINE_STATISTICS)) for the batch's most lines L."""
        line = sorted(set(names) & set(LINE_FEATURES))
        if line:
            raise ValueError(f"the likelihood feature(s) {line} read the scored texts' lines: "
                             f"use likelihood_features_of or score, not an encoded batch")
        logits, labels, mask = self._scored_logits(self.backbone, input_ids, attention_mask,
                                                   score_mask, vision)
        logp = token_logps(logits, labels)
        total = reduce_logps(logp, mask)
        count = mask.sum(-1).float()
        columns = {"sum": total, "mean": total / count.clamp(min=1),
                   "min": logp.masked_fill(~mask, float("inf")).min(-1).values,
                   "tokens": count}
        if {"end", "early_end"} & set(names):  # opt-in: a second pass over the vocab
            self.check_features_span("likelihood_features")
            # The scored span ends with the end-of-turn token (`through_turn_text`): its
            # log-prob there, and the log-prob of that same token at every earlier position.
            last = last_token_index(mask)
            rows = torch.arange(len(last), device=last.device)
            end_logp = token_logps(logits, labels[rows, last][:, None].expand_as(labels))
            earlier = mask.clone()
            earlier[rows, last] = False
            columns["end"] = logp[rows, last]
            columns["early_end"] = (end_logp.masked_fill(~earlier, NO_EARLY_END)
                                    .max(-1).values.clamp(min=NO_EARLY_END))
        table = torch.stack([columns[name] for name in names], -1) if names else (
            logp.new_zeros(len(logp), 0))
        if not lines:
            return table
        newline = self._newline_token_ids().to(labels.device)[labels] & mask
        rows = [line_statistics(logp[i][mask[i]], newline[i][mask[i]])
                for i in range(len(logp))]
        return torch.cat([table, pack_lines(rows).to(table)], 1)

    def _newline_token_ids(self) -> torch.Tensor:
        """(V,) bool over the tokenizer's ids (every scored token comes from it): the tokens
        that hold a newline, where a line ends."""
        if self._newline_ids is None:
            tok = getattr(self.processor, "tokenizer", self.processor)
            pieces = tok.batch_decode([[i] for i in range(len(tok))])
            object.__setattr__(self, "_newline_ids",
                               torch.tensor(["\n" in p for p in pieces], dtype=torch.bool))
        return self._newline_ids

    def check_features_span(self, where: Any) -> None:
        """`end` and `early_end` read the end-of-turn token, which only the turn span scores."""
        if self.readout == "likelihood" and self.scored_span != "turn" and (
                {"end", "early_end"} & set(self.features)):
            raise ValueError(f"{where}: the likelihood features end/early_end need "
                             f"scored_span 'turn', not {self.scored_span!r}")

    @torch.no_grad()
    def likelihood_features_of(self, items: Sequence[RewardInput], batch_size: int = 16
                               ) -> torch.Tensor:
        """`likelihood_features` of `items`, in order: (N, len(self.features)) on the CPU,
        LINE_FEATURES included."""
        token_names = [f for f in self.features if f not in LINE_FEATURES]
        lines = self.likelihood_head == "lines"
        columns: dict[str, torch.Tensor] = {}
        table = torch.zeros(len(items), len(token_names))
        if token_names or lines:
            out = [self._token_features(token_names, lines=lines, **batch).float().cpu()
                   for batch in self._encoded_batches(items, batch_size)]
            if out:
                table = cat_padded(out)  # batches differ in their most lines
            columns = {name: table[:, j] for j, name in enumerate(token_names)}
        if "redundancy" in self.features:
            columns["redundancy"] = self.line_redundancy(items, batch_size)
        if "answer_redundancy" in self.features:
            columns["answer_redundancy"] = self.answer_redundancy(items, batch_size)
        named = torch.stack([columns[name] for name in self.features], -1)
        return torch.cat([named, table[:, len(token_names):]], 1) if lines else named

    @torch.no_grad()
    def line_redundancy(self, items: Sequence[RewardInput], batch_size: int = 16
                        ) -> torch.Tensor:
        """The `redundancy` feature of `items` (N,): the highest cosine similarity between two
        of a scored text's lines, each read alone (`line_states`); NO_LINE_PAIR for a text of
        fewer than two lines."""
        reads, rows = distinct_lines(items)
        states = nn.functional.normalize(self.line_states(reads, batch_size), dim=-1)
        out = torch.full((len(items),), NO_LINE_PAIR)
        for i, row in enumerate(rows):
            s = states[row]
            if len(row) > 1:
                sim = (s @ s.T).masked_fill(torch.eye(len(row), dtype=torch.bool), -2.0)
                out[i] = sim.max()
        return out

    @torch.no_grad()
    def answer_redundancy(self, items: Sequence[RewardInput], batch_size: int = 16
                          ) -> torch.Tensor:
        """The `answer_redundancy` feature of `items` (N,): over ordered pairs of a scored
        text's lines (i, j), the highest mean log-prob per token of line j's answer (the line
        reader's, `line_answers`) after line i, less that after line j itself; at least 0
        for a text that asks a line twice, NO_ANSWER_PAIR for a text of fewer than two lines.

        Why the answers: the states of two lines of one template about different objects are
        as close as those of a rewording (cosine 0.99), but their answers name different
        objects; a rewording's answer fits either line. AUC for "the set repeats a question"
        on the world's annotations: 0.98, against 0.885 for `redundancy` (docs/results.md,
        session 28)."""
        from mmalign.curate.annotations import answer_text

        reads, rows = distinct_lines(items)
        answers = self.line_answers(reads, batch_size)
        cross: dict[tuple[int, int], int] = {}  # (asked line, answered line) -> its read
        for row in rows:
            if len(row) > 1:
                for i in row:
                    for j in row:
                        cross.setdefault((i, j), len(cross))
        fits = self.line_reader_logps(
            [RewardInput(reads[i][0], answer_text(reads[i][1], answers[j])) for i, j in cross],
            batch_size)
        out = torch.full((len(items),), NO_ANSWER_PAIR)
        for n, row in enumerate(rows):
            gaps = [fits[cross[i, j]] - fits[cross[j, j]]
                    for a, i in enumerate(row) for b, j in enumerate(row) if a != b]
            if gaps:
                out[n] = max(max(gaps).item(), NO_ANSWER_PAIR)
        return out

    @torch.no_grad()
    def line_states(self, lines: Sequence[tuple[Sequence[Any], str]], batch_size: int = 16
                    ) -> torch.Tensor:
        """(N, H) on the CPU: each (images, line) read by the line reader as the user's
        question with the images, its last hidden state where the answer would begin."""
        model, _ = self._reader
        out = []
        for enc in self._line_prompts(lines, batch_size, "right"):
            hidden = model(**enc, use_cache=False, output_hidden_states=True,
                           logits_to_keep=1).hidden_states[-1]
            last = last_token_index(enc["attention_mask"])
            out.append(hidden[torch.arange(len(last)), last].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size)

    @torch.no_grad()
    def line_answers(self, lines: Sequence[tuple[Sequence[Any], str]], batch_size: int = 16
                     ) -> list[str]:
        """The line reader's greedy answer to each (images, line), asked as the user's
        question with the images (at most LINE_ANSWER_TOKENS tokens)."""
        model, processor = self._reader
        tokenizer = getattr(processor, "tokenizer", processor)
        out: list[str] = []
        for enc in self._line_prompts(lines, batch_size, "left"):  # generation pads left
            ids = model.generate(**enc, max_new_tokens=LINE_ANSWER_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out

    @torch.no_grad()
    def line_reader_logps(self, items: Sequence[RewardInput], batch_size: int = 16
                          ) -> torch.Tensor:
        """(N,) on the CPU: the line reader's mean log-prob per token of each answer RM text's
        answer (`turns` layout, this model's scored span) after its question and images."""
        model, processor = self._reader
        out = []
        with self._reading(model):
            for start in range(0, len(items), batch_size):
                # one line and a short answer: no max_length to cut at
                enc = encode_inputs(processor, items[start:start + batch_size], None, "turns",
                                    score_mask=True, span=self.scored_span)
                enc = {k: v.to(next(model.parameters()).device) for k, v in enc.items()}
                ids, attention, score = (enc.pop(k) for k in
                                         ("input_ids", "attention_mask", "score_mask"))
                logits, labels, mask = self._scored_logits(model, ids, attention, score,
                                                           vision=enc)  # the rest: vision
                out.append(reduce_logps(token_logps(logits, labels), mask, average=True)
                           .float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @property
    def _reader(self) -> tuple[nn.Module, Any]:
        """(model, processor) that reads LINE_FEATURES' single lines: the line reader, or
        the backbone."""
        return self._line_reader or (self.backbone, self.processor)

    def _line_prompts(self, lines: Sequence[tuple[Sequence[Any], str]], batch_size: int,
                      padding_side: str):
        """Batches of (images, line) encoded for the line reader as the user's question with
        the images, then the generation prompt; the reader in eval mode while they are read."""
        model, processor = self._reader
        with self._reading(model):
            for start in range(0, len(lines), batch_size):
                chunk = lines[start:start + batch_size]
                n, images = batch_images([imgs for imgs, _ in chunk])
                texts = [question_prompt(processor, n, line) for _, line in chunk]
                yield processor(images=images, text=texts, padding=True,
                                padding_side=padding_side, return_tensors="pt"
                                ).to(next(model.parameters()).device)

    @staticmethod
    @contextmanager
    def _reading(model: nn.Module):
        """`model` in eval mode inside, its mode restored after."""
        was_training = model.training
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)

    def _implicit_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         score_mask: torch.Tensor | None, vision: dict[str, Any]
                         ) -> torch.Tensor:
        def logps(model: nn.Module) -> torch.Tensor:
            return self._scored_logps(model, input_ids, attention_mask, score_mask, vision)

        policy = logps(self.backbone)
        with torch.no_grad():
            if self._peft is not None:
                with self._peft.disable_adapter():
                    reference = logps(self.backbone)
            else:
                reference = logps(self._reference)
        return self.beta * (policy - reference)

    def encode(self, items: Sequence[RewardInput]) -> dict[str, torch.Tensor]:
        return encode_inputs(self.processor, items, self.max_length, self.layout,
                             score_mask=self.readout != "last", span=self.scored_span)

    @torch.no_grad()
    def score(self, items: Sequence[RewardInput], batch_size: int = 16) -> list[float]:
        """Scores of `items`, in order (scalar head)."""
        if self.readout == "likelihood":  # the features of every item (lines included)
            return self.head_scores(self.likelihood_features_of(items, batch_size))
        return [float(s) for batch in self._encoded_batches(items, batch_size)
                for s in self(**batch).float().cpu()]

    @torch.no_grad()
    def head_scores(self, features: torch.Tensor) -> list[float]:
        """The likelihood head's scores of `likelihood_features_of` rows, features read once
        and scored again (a head refitted on the frozen backbone's features)."""
        return [float(s) for s in self.head(features.to(self.device)).float().cpu()]

    def _encoded_batches(self, items: Sequence[RewardInput], batch_size: int):
        """`encode`d batches of `items` on the model's device, the model in eval mode while
        they are read (its mode is restored after)."""
        with self._reading(self):
            for start in range(0, len(items), batch_size):
                batch = self.encode(items[start:start + batch_size])
                yield {k: v.to(self.device) for k, v in batch.items()}


class LikelihoodHead(nn.Module):
    """The likelihood readout's head: features standardised with the training set's mean and
    spread (buffers, saved with the weights), then a two-layer tanh MLP to one score."""

    def __init__(self, hidden: int = 32, n_features: int = len(DEFAULT_LIKELIHOOD_FEATURES)):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def reset(self, generator: torch.Generator) -> None:
        reset_mlp(self.mlp, generator)

    def standardise(self, features: torch.Tensor) -> None:
        """Set the standardisation from the training texts' features."""
        fit_standardisation(self.feature_mean, self.feature_std, features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.mlp(x).squeeze(-1)


class LineHead(nn.Module):
    """The `lines` likelihood head: the mean over a text's lines of a tanh MLP of the line's
    LINE_STATISTICS, plus a tanh MLP of the text's features and its line count. Features as
    `_token_features` packs them: the text's F columns, then L lines of statistics (NaN for
    lines past the text's last); L may differ between calls. Each part is standardised with
    the training set's mean and spread (over the lines that are there)."""

    def __init__(self, hidden: int = 32, n_features: int = 1):
        super().__init__()
        self.n_features = n_features
        n_line, n_set = len(LINE_STATISTICS), n_features + 1  # + the line count
        self.register_buffer("line_mean", torch.zeros(n_line))
        self.register_buffer("line_std", torch.ones(n_line))
        self.register_buffer("feature_mean", torch.zeros(n_set))
        self.register_buffer("feature_std", torch.ones(n_set))
        self.line = nn.Sequential(nn.Linear(n_line, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(nn.Linear(n_set, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def reset(self, generator: torch.Generator) -> None:
        reset_mlp(self.line, generator)
        reset_mlp(self.mlp, generator)

    def _parts(self, features: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the text's features with its line count (N, F + 1), its lines' statistics
        (N, L, S), which lines are there (N, L))."""
        n_line = len(LINE_STATISTICS)
        lines = features[:, self.n_features:].reshape(len(features), -1, n_line)
        present = ~lines[..., 0].isnan()
        if not present.any(1).all():
            raise ValueError("the lines head needs every text to have a line")
        count = present.sum(1, keepdim=True).to(features.dtype)
        return torch.cat([features[:, :self.n_features], count], 1), lines, present

    def standardise(self, features: torch.Tensor) -> None:
        whole, lines, present = self._parts(features)
        fit_standardisation(self.feature_mean, self.feature_std, whole)
        fit_standardisation(self.line_mean, self.line_std, lines[present])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        whole, lines, present = self._parts(features.to(self.feature_mean.dtype))
        x = ((lines - self.line_mean) / self.line_std).nan_to_num(0.0)
        per_line = self.line(x).squeeze(-1) * present
        mean = per_line.sum(1) / present.sum(1)
        return mean + self.mlp((whole - self.feature_mean) / self.feature_std).squeeze(-1)


def fit_standardisation(mean: torch.Tensor, std: torch.Tensor, rows: torch.Tensor) -> None:
    """Set the buffers `mean` and `std` to `rows`' column mean and spread (at least 1e-6, so a
    constant column standardises to zero rather than dividing by zero)."""
    mean.copy_(rows.mean(0))
    std.copy_(rows.std(0).clamp(min=1e-6))


@torch.no_grad()
def reset_mlp(mlp: nn.Sequential, generator: torch.Generator) -> None:
    """A seeded draw of `mlp`'s linear layers in PyTorch's default range, biases zero."""
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            bound = layer.in_features ** -0.5
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator)
                               * 2 * bound - bound)
            layer.bias.zero_()


def line_statistics(logps: torch.Tensor, ends_line: torch.Tensor) -> list[list[float]]:
    """LINE_STATISTICS of each line of one text's scored tokens (`logps`, and `ends_line`:
    which tokens hold a newline); the tokens after the last newline are the last line."""
    out = []
    stops = (ends_line.nonzero().flatten() + 1).tolist()
    if not stops or stops[-1] < len(logps):
        stops.append(len(logps))
    start = 0
    for stop in stops:
        v = logps[start:stop].float()
        start = stop
        after = v[1:] if len(v) > 1 else v
        out.append([float(v.sum()), float(v.mean()), float(v.min()), float(len(v)),
                    float(after.min()), float(v[-1]),
                    float(after.sort().values[len(after) // 2])])
    return out


def pack_lines(rows: list[list[list[float]]]) -> torch.Tensor:
    """Texts' per-line statistics as one (N, L * len(LINE_STATISTICS)) table, NaN past each
    text's last line."""
    n_line = len(LINE_STATISTICS)
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width, n_line), float("nan"))
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = torch.tensor(r)
    return out.reshape(len(rows), width * n_line)


def cat_padded(tables: Sequence[torch.Tensor]) -> torch.Tensor:
    """Row-wise concatenation of feature tables whose widths differ in their packed lines:
    the narrower ones padded with NaN (lines that are not there)."""
    width = max(t.shape[1] for t in tables)
    return torch.cat([nn.functional.pad(t, (0, width - t.shape[1]), value=float("nan"))
                      for t in tables])


def saved_model_hash(path: str | os.PathLike) -> str:
    """A content hash of what a saved reward model was trained into: its head file, or, for
    the implicit readout (no head), its backbone's weight files; with its config either way.
    Big weight files are sampled (`pipeline.file_hash`), so this stays cheap."""
    import hashlib

    from mmalign.pipeline import file_hash

    path = Path(path)
    trained = ([path / HEAD_FILE] if (path / HEAD_FILE).is_file()
               else sorted(path.glob("*.safetensors")))
    if not trained:
        raise FileNotFoundError(f"{path}: no {HEAD_FILE} and no weight files")
    h = hashlib.sha256()
    for f in [path / CONFIG_FILE, *trained]:
        h.update(file_hash(f).encode())
    return "sha256:" + h.hexdigest()


LAYOUTS = ("user", "turns")


def check_readout(readout: str, where: Any = "readout") -> str:
    if readout not in READOUTS:
        raise ValueError(f"{where}: reward readout {readout!r}, expected one of {READOUTS}")
    return readout


def check_layout(layout: str, where: Any = "layout") -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"{where}: reward input layout {layout!r}, expected one of {LAYOUTS}")
    return layout


SCORED_SPANS = ("turn", "to_end")


def check_features(features: Sequence[str], where: Any = "likelihood_features"
                   ) -> tuple[str, ...]:
    features = tuple(features)
    unknown = [f for f in features if f not in LIKELIHOOD_FEATURES]
    if unknown or not features or len(set(features)) != len(features):
        raise ValueError(f"{where}: likelihood features must be distinct names from "
                         f"{list(LIKELIHOOD_FEATURES)}, got {list(features)}")
    return features


def check_likelihood_head(head: str, readout: str, where: Any = "likelihood_head") -> str:
    """`head` if it is one of LIKELIHOOD_HEADS and `readout` has it (only the likelihood
    readout reads anything but `set`, which the other readouts' configs carry unread)."""
    if head not in LIKELIHOOD_HEADS:
        raise ValueError(f"{where}: likelihood head {head!r}, expected one of "
                         f"{LIKELIHOOD_HEADS}")
    if head != "set" and readout != "likelihood":
        raise ValueError(f"{where}: the {head!r} head is the likelihood readout's; this one "
                         f"is {readout!r}")
    return head


def _saved_features(cfg: dict[str, Any], where: Any) -> tuple[str, ...]:
    """The likelihood features a saved reward model reads: its config's, or, from a model
    saved before they were recorded, the four it was trained on."""
    return check_features(cfg.get("likelihood_features", DEFAULT_LIKELIHOOD_FEATURES),
                          f"{where}: likelihood_features")


def check_span(span: str, where: Any = "scored_span") -> str:
    if span not in SCORED_SPANS:
        raise ValueError(f"{where}: scored span {span!r}, expected one of {SCORED_SPANS}")
    return span


def turns_split(text: str) -> tuple[str, str]:
    """(user text, scored text) of a reward input in the `turns` layout: the question (if
    any) asks, the scored text answers."""
    from mmalign.curate.annotations import split_answer_text

    return split_answer_text(text) or ("", text)


def reward_prompt(processor: Any, n_images: int, text: str, layout: str = "user",
                  prompt_only: bool = False) -> str:
    """The chat-templated text of one reward input (layouts: the module docstring). With
    `prompt_only` (`turns` layout), the user turn and the generation prompt: what precedes the
    scored text."""
    check_layout(layout)
    prompt, scored = text, None  # "user": all of it in the user turn
    if layout == "turns":
        prompt, scored = turns_split(text)
    messages = [user_turn(n_images, prompt if prompt or scored is None else None)]
    if prompt_only:
        if scored is None:
            raise ValueError("only the `turns` layout puts the scored text in a turn of its own")
        return processor.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    if scored is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": scored}]})
    return processor.apply_chat_template(messages, tokenize=False)


def user_turn(n_images: int, text: str | None) -> dict[str, Any]:
    """The user message of a reward input: the images, then `text` (if any) on a new line."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    if text is not None:
        content.append({"type": "text", "text": ("\n" if n_images else "") + text})
    return {"role": "user", "content": content}


def distinct_lines(items: Sequence[RewardInput]
                   ) -> tuple[list[tuple[Sequence[Any], str]], list[list[int]]]:
    """(reads, rows): each distinct (images, line) of the items' scored texts once (the
    candidates of one image share most of their questions), and per item the indices of its
    lines in `reads`, in order; a line asked twice appears twice."""
    index: dict[tuple, int] = {}
    reads: list[tuple[Sequence[Any], str]] = []
    rows = []
    for it in items:
        key = tuple(str(im) if isinstance(im, str | Path) else id(im) for im in it.images)
        row = []
        for line in (ln for ln in turns_split(it.text)[1].split("\n") if ln.strip()):
            if (key, line) not in index:
                index[key, line] = len(reads)
                reads.append((it.images, line))
            row.append(index[key, line])
        rows.append(row)
    return reads, rows


def question_prompt(processor: Any, n_images: int, question: str) -> str:
    """A user turn of the images and `question`, then the generation prompt: the text after
    which the model would answer (the `user` layout's turn, as the line reader reads it)."""
    return processor.apply_chat_template([user_turn(n_images, question)], tokenize=False,
                                         add_generation_prompt=True)


def batch_images(images_of: Sequence[Sequence[Any]]) -> tuple[int, list | None]:
    """(images per item, the loaded images or None) of a batch; every item must have the
    same number of images (the scorer groups them)."""
    from mmalign.io.images import load_image

    counts = {len(images) for images in images_of}
    if len(counts) != 1:
        raise ValueError(f"a batch mixes items with {sorted(counts)} images; group them first")
    n = counts.pop()
    if not n:
        return 0, None
    return n, [[im if not isinstance(im, str | Path) else load_image(im) for im in images]
               for images in images_of]


def encode_inputs(processor: Any, items: Sequence[RewardInput],
                  max_length: int | None = None, layout: str = "user",
                  score_mask: bool = False, span: str = "turn") -> dict[str, torch.Tensor]:
    """Tokenise a batch (right padding). All items must have the same number of images (the
    scorer groups them). With `max_length`, text past it is cut; cutting into image tokens
    is refused with a message, since it breaks every VLM forward. With `score_mask`
    (`turns` layout), also a (B, T) mask that is 1 on the scored tokens of `span`
    (`_scored_tokens`)."""
    n_images, images = batch_images([it.images for it in items])
    texts = [reward_prompt(processor, n_images, it.text, layout) for it in items]
    enc = processor(images=images, text=texts, padding=True, padding_side="right",
                    return_tensors="pt")
    if score_mask:
        enc["score_mask"] = _scored_tokens(processor, items, texts, n_images, layout, images,
                                           enc, check_span(span))
    if max_length is not None and enc["input_ids"].shape[1] > max_length:
        image_id = _image_token_id(processor)
        if image_id is not None:
            last_image = (enc["input_ids"] == image_id).long().cumsum(-1).argmax(-1).max()
            if n_images and int(last_image) >= max_length:
                raise ValueError(f"max_length={max_length} would cut image tokens (they run to "
                                 f"position {int(last_image) + 1}); raise max_length")
        for key in ("input_ids", "attention_mask", "score_mask"):
            if key in enc:
                enc[key] = enc[key][:, :max_length]
        if score_mask and not bool(enc["score_mask"].any(-1).all()):
            raise ValueError(f"max_length={max_length} cuts every scored token of an input; "
                             f"raise max_length")
    return dict(enc)


def _scored_tokens(processor: Any, items: Sequence[RewardInput], texts: list[str],
                   n_images: int, layout: str, images: Any, enc: Any, span: str
                   ) -> torch.Tensor:
    """1 on each row's scored text and the one token after it, its end of turn
    (`through_turn_text`): the span chat SFT trains on. The template's newline after it,
    scored before session 20, was every text's minimum log-prob.

    The span starts where the full and the prompt-only encodings part ways and ends one
    token past where the full encoding and the encoding of the text up to the scored text's
    end part ways, so a template that tokenises either seam differently is still cut
    right. A template that does not keep the scored text verbatim is scored to its end, as
    is every row with span "to_end" (reward models saved before this rule)."""
    prompts = [reward_prompt(processor, n_images, it.text, layout, prompt_only=True)
               for it in items]
    cuts = [] if span == "to_end" else [  # `texts`: the full inputs, as encoded in `enc`
        through_turn_text(full, turns_split(it.text)[1]) or full
        for it, full in zip(items, texts, strict=True)]
    pre = processor(images=None if images is None else images * (2 if cuts else 1),
                    text=prompts + cuts, padding=True, padding_side="right",
                    return_tensors="pt")
    n = len(items)
    mask = torch.zeros_like(enc["input_ids"])
    for i in range(n):
        full = enc["input_ids"][i][enc["attention_mask"][i].bool()]
        start = _shared_prefix(full, pre["input_ids"][i][pre["attention_mask"][i].bool()])
        stop = len(full)
        if cuts:
            cut = pre["input_ids"][n + i][pre["attention_mask"][n + i].bool()]
            stop = min(_shared_prefix(full, cut) + 1, stop)
        if start >= stop:
            raise ValueError(f"input {i}: no scored token after the prompt ({items[i].text!r})")
        mask[i, start:stop] = 1
    return mask


def _shared_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading token ids two encodings share."""
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _image_token_id(processor: Any) -> int | None:
    tok = processor.tokenizer
    token = getattr(processor, "image_token", None) or "<image>"
    tid = tok.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tok.unk_token_id else None
