"""Held-out scoring reads each distinct (image, text) once, and the likelihood readout's
frozen features once for both the before and the after figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmalign.curate.annotations import RewardPair
from mmalign.curate.reward_train import HeldOutScorer, distinct_sides, held_out_scores

ROOTS = {"g1": Path("/w1"), "g2": Path("/w2")}
PAIRS = [RewardPair("a.png", "best", "mid", "g1"), RewardPair("a.png", "best", "low", "g1"),
         RewardPair("a.png", "mid", "low", "g1"),
         RewardPair("a.png", "best", "low", "g2")]  # same names, another root: other items


def _value(item) -> float:
    return {"best": 3.0, "mid": 2.0, "low": 1.0}[item.text] + (10 if "w2" in str(item.images[0])
                                                                 else 0)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(1))
        self.weight = 1.0

    def forward(self, features):
        return self.weight * features[:, 0]


class _LikelihoodRM:
    readout = "likelihood"

    def __init__(self):
        self.head, self.reads = _Head(), []

    def likelihood_features_of(self, items, batch_size):
        self.reads.append(list(items))
        return torch.tensor([[_value(i)] for i in items])

    def head_scores(self, features):
        return self.head(features).tolist()


class _LastTokenRM:
    readout = "last"

    def __init__(self):
        self.reads = []

    def score(self, items, batch_size):
        self.reads.append(list(items))
        return [_value(i) for i in items]


def test_distinct_sides_index_each_image_and_text_once():
    items, better, worse = distinct_sides(PAIRS, ROOTS)
    assert [(str(i.images[0]), i.text) for i in items] == [
        ("/w1/a.png", "best"), ("/w1/a.png", "mid"), ("/w1/a.png", "low"),
        ("/w2/a.png", "best"), ("/w2/a.png", "low")]
    assert better == [0, 0, 1, 3] and worse == [1, 2, 2, 4]


@pytest.mark.parametrize("make", [_LikelihoodRM, _LastTokenRM])
def test_scores_are_each_pairs_sides_in_order_and_each_text_is_read_once(make):
    rm = make()
    better, worse = held_out_scores(rm, PAIRS, ROOTS, batch_size=2)
    assert better == [3.0, 3.0, 2.0, 13.0] and worse == [2.0, 1.0, 1.0, 11.0]
    assert len(rm.reads) == 1 and len(rm.reads[0]) == 5
    assert held_out_scores(rm, [], ROOTS, batch_size=2) == ([], [])


def test_the_likelihood_features_are_read_once_before_and_after_the_fit():
    rm = _LikelihoodRM()
    held_out = HeldOutScorer(rm, PAIRS, ROOTS, batch_size=2)
    assert held_out.scores()[0] == [3.0, 3.0, 2.0, 13.0]
    rm.head.weight = -1.0  # the fit changes only the head
    assert held_out.scores() == ([-3.0, -3.0, -2.0, -13.0], [-2.0, -1.0, -1.0, -11.0])
    assert len(rm.reads) == 1
    other = _LastTokenRM()  # a trained backbone is read again
    held_out = HeldOutScorer(other, PAIRS, ROOTS, batch_size=2)
    held_out.scores(), held_out.scores()
    assert len(other.reads) == 2
