"""Log-probabilities of response tokens: the one gathering function every trainer uses.

Conventions (shared with TRL): a batch is [N, T] token ids with a `response_mask` that is 1 on
response tokens; the logit at position i predicts token i + 1. Models may return logits for the
last K positions only (HF `logits_to_keep=K`), which saves the LM head over image and prompt
tokens; `response_window` gives the smallest K that still covers every response token.
"""

from __future__ import annotations

import torch


def through_turn_text(rendered: str, text: str) -> str | None:
    """A chat-templated conversation cut right after the last occurrence of one turn's
    `text`; None where the template did not keep the text verbatim.

    A response's tokens end one token past this cut: the text and its end-of-turn token
    (`</s>`, `<|im_end|>`), the span chat SFT trains (TRL's assistant mask). What a template
    adds after the turn, such as the tiny template's newline, was never a training target:
    scored, its log-prob is several nats of noise (docs/LOG.md, session 20)."""
    end = rendered.rfind(text)
    return rendered[:end + len(text)] if text and end >= 0 else None


def response_window(response_mask: torch.Tensor) -> int:
    """Smallest K such that the last K logits predict every response token.

    response_mask: [N, T]. The first response token at position p is predicted by logit p - 1,
    so K = T - (earliest p) + 1.
    """
    t = response_mask.shape[1]
    has = response_mask.any(dim=0)  # [T]
    if not bool(has.any()):
        raise ValueError("no response tokens in the batch (all truncated?)")
    first = int(has.nonzero()[0])
    return t - first + 1


def align(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Line up logits with the tokens they predict.

    logits: [N, K, V] for positions T-K .. T-1 (K = T for full logits); input_ids and
    response_mask: [N, T]. Returns (logits [N, K-1, V], labels [N, K-1], mask [N, K-1]).
    """
    k = logits.shape[1]
    t = input_ids.shape[1]
    if k > t:
        raise ValueError(f"{k} logit positions for {t} tokens")
    start = t - k + 1  # first token predicted by the kept logits
    return logits[:, :-1], input_ids[:, start:], response_mask[:, start:].bool()


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position: [N, L, V], [N, L] -> [N, L] (float32).

    Written as logit[label] - logsumexp(logits), which never materialises the [N, L, V]
    log-softmax tensor (the same maths, less memory on large vocabularies).
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def reduce_logps(per_token: torch.Tensor, mask: torch.Tensor, average: bool = False
                 ) -> torch.Tensor:
    """Sum (DPO's log pi(y|x)) or mean over response tokens: [N, L], [N, L] -> [N]."""
    total = (per_token * mask).sum(-1)
    if average:
        return total / mask.sum(-1).clamp(min=1)
    return total


def response_logps(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor,
                   average: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequence log-prob of each row's response.

    Returns (logps [N], per-token log-probs [N, K-1], mask [N, K-1]); the per-token values
    feed the SFT term, the counts (mask.sum(-1)) turn sums into means.
    """
    logits, labels, mask = align(logits, input_ids, response_mask)
    per_token = token_logps(logits, labels)
    return reduce_logps(per_token, mask, average), per_token, mask


def argmax_logps(scoring_logits: torch.Tensor, argmax_from: torch.Tensor,
                 input_ids: torch.Tensor, response_mask: torch.Tensor, average: bool = False
                 ) -> torch.Tensor:
    """POVID's noise negative: score the argmax tokens of `argmax_from` under `scoring_logits`.

    Both are [N, K, V] logits of the same model run teacher-forced on the same chosen tokens,
    `argmax_from` with the noisy image and `scoring_logits` with the clean one. At every
    response position the token the noisy-image model would predict is scored by the
    clean-image model given the same (chosen) prefix, as POVID's `_get_noisy_batch_logps`
    does; the argmax is not differentiable, so `argmax_from` may come from a no-grad pass.
    Returns [N].
    """
    if argmax_from.shape[:2] != scoring_logits.shape[:2]:
        raise ValueError(f"logit shapes differ: {tuple(argmax_from.shape)} vs "
                         f"{tuple(scoring_logits.shape)}")
    scoring, _, mask = align(scoring_logits, input_ids, response_mask)
    tokens = argmax_from[:, :-1].argmax(-1)  # [N, K-1]
    return reduce_logps(token_logps(scoring, tokens), mask, average)
