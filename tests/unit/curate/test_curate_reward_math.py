"""The reward model's maths: last-token pooling, the pairwise loss, pairwise accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.models.reward import last_token_index, pairwise_accuracy, pairwise_loss


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [4, 4]


def test_pairwise_loss_by_hand():
    better, worse = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 2, 0, -2
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert pairwise_loss(better, worse).item() == pytest.approx(expected, rel=1e-6)
    b = torch.tensor([0.3], requires_grad=True)
    pairwise_loss(b, torch.tensor([0.3])).backward()
    assert b.grad.item() == pytest.approx(-0.5)  # d/ds_b = -(1 - sigmoid(0))


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy([1, 2, 3, 0.5], [0, 3, 3, 0.1]) == 0.5
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError):
        pairwise_accuracy([1], [])
