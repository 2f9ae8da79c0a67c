"""Response log-prob gathering: alignment, windows, reductions, POVID's argmax scoring."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.train.logps import (
    argmax_logps,
    reduce_logps,
    response_logps,
    response_window,
    through_turn_text,
    token_logps,
)


def test_token_logps_is_log_softmax_gather():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    want = logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
    torch.testing.assert_close(token_logps(logits, labels), want)


def test_hand_example_sum_and_mean():
    # Vocabulary of 2, uniform logits: every token has log-prob log(1/2).
    # Sequence [p p r r r]: 3 response tokens, predicted by logits at positions 1, 2, 3.
    ids = torch.tensor([[0, 1, 1, 0, 1]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    logits = torch.zeros(1, 5, 2)
    total, per_token, m = response_logps(logits, ids, mask)
    assert math.isclose(total.item(), 3 * math.log(0.5), rel_tol=1e-6)
    assert m.sum().item() == 3 and per_token.shape == (1, 4)
    mean, _, _ = response_logps(logits, ids, mask, average=True)
    assert math.isclose(mean.item(), math.log(0.5), rel_tol=1e-6)
    # a logit of +10 on the right token at position 1 (predicting token 2 = 1) changes one term
    logits[0, 1, 1] = 10.0
    total2, _, _ = response_logps(logits, ids, mask)
    expected = 2 * math.log(0.5) + (10 - math.log(math.exp(10) + 1))
    assert math.isclose(total2.item(), expected, rel_tol=1e-6)


def test_window_keeps_every_response_token():
    mask = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]])
    k = response_window(mask)
    assert k == 6 - 3 + 1  # first response token at 3 is predicted by logit 2
    ids = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(2))
    logits = torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(3))
    full, _, _ = response_logps(logits, ids, mask)
    cut, _, _ = response_logps(logits[:, -k:], ids, mask)
    torch.testing.assert_close(full, cut)
    short, _, _ = response_logps(logits[:, -(k - 1):], ids, mask)  # one too few: a term lost
    assert not torch.allclose(full, short)
    with pytest.raises(ValueError, match="no response tokens"):
        response_window(torch.zeros(2, 4, dtype=torch.long))


def test_reduce_ignores_masked_positions():
    per_token = torch.tensor([[-1.0, -100.0], [-2.0, -3.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    torch.testing.assert_close(reduce_logps(per_token, mask), torch.tensor([-1.0, -5.0]))
    torch.testing.assert_close(reduce_logps(per_token, mask, True), torch.tensor([-1.0, -2.5]))


def test_argmax_tokens_from_noisy_logits_scored_by_clean_logits():
    # 4 positions, vocab 3; response = tokens 2..3, predicted by logits 1 and 2.
    ids = torch.tensor([[0, 0, 1, 2]])
    mask = torch.tensor([[0, 0, 1, 1]])
    clean = torch.log(torch.tensor([[[1 / 3] * 3, [0.2, 0.5, 0.3], [0.6, 0.1, 0.3],
                                     [1 / 3] * 3]]))
    noisy = torch.zeros(1, 4, 3)
    noisy[0, 1, 2] = 5.0  # noisy model predicts token 2 at position 1 ...
    noisy[0, 2, 0] = 5.0  # ... and token 0 at position 2
    got = argmax_logps(clean, noisy, ids, mask)
    assert math.isclose(got.item(), math.log(0.3) + math.log(0.6), rel_tol=1e-5)
    # with the noisy model agreeing with the chosen tokens it is the chosen log-prob
    agree = torch.zeros(1, 4, 3)
    agree[0, 1, 1] = agree[0, 2, 2] = 5.0
    chosen, _, _ = response_logps(clean, ids, mask)
    torch.testing.assert_close(argmax_logps(clean, agree, ids, mask), chosen)


def test_a_turn_is_cut_after_its_text_not_after_what_the_template_adds():
    rendered = "USER: What?\nASSISTANT: Two.</s>\nUSER: And?\nASSISTANT: Two.</s>\n"
    assert through_turn_text(rendered, "Two.") == rendered.removesuffix("</s>\n")
    assert through_turn_text(rendered, "Three.") is None  # a template that changed the text
    assert through_turn_text(rendered, "") is None
