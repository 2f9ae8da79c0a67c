"""DPO / IPO / hinge and the SFT term, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.train.losses import dpo_margin, implicit_rewards, preference_loss, sft_nll

# policy chosen -1, rejected -3; reference chosen -2, rejected -2:
# h = (-1 - -2) - (-3 - -2) = 1 - (-1) = 2
PC, PR, RC, RR = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                  torch.tensor([-2.0]))


def test_margin_by_hand():
    assert dpo_margin(PC, PR, RC, RR).item() == 2.0


def test_sigmoid_dpo_by_hand():
    # -log sigmoid(0.1 * 2) = log(1 + e^-0.2) = log(1.8187307531) = 0.5981388693
    loss = preference_loss(PC, PR, RC, RR, beta=0.1, loss_type="sigmoid")
    assert math.isclose(loss.item(), 0.5981388693, rel_tol=1e-6)
    # equal margins: loss = log 2 whatever beta is
    zero = preference_loss(RC, RR, RC, RR, beta=0.7)
    assert math.isclose(zero.item(), math.log(2), rel_tol=1e-6)


def test_hinge_by_hand():
    assert math.isclose(preference_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge").item(),
                        0.8, rel_tol=1e-6)  # max(0, 1 - 0.2)
    assert preference_loss(PC, PR, RC, RR, beta=1.0, loss_type="hinge").item() == 0.0


def test_ipo_by_hand():
    # (h - 1 / (2 beta))^2 = (2 - 5)^2 = 9 at beta 0.1; (2 - 0.5)^2 = 2.25 at beta 1
    assert math.isclose(preference_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo").item(), 9.0)
    assert math.isclose(preference_loss(PC, PR, RC, RR, beta=1.0, loss_type="ipo").item(), 2.25)


def test_per_pair_values_and_gradient_direction():
    pc = torch.tensor([-1.0, -5.0], requires_grad=True)
    pr = torch.tensor([-3.0, -4.0], requires_grad=True)
    ref = torch.tensor([-2.0, -4.0])
    loss = preference_loss(pc, pr, ref, ref, beta=0.5)
    # pair 1: h = 1 - (-1) = 2 -> log(1 + e^-1) = 0.3132616875; pair 2: h = -1 - 0 = -1
    # -> log(1 + e^0.5) = 0.9740769842
    torch.testing.assert_close(loss.detach(), torch.tensor([0.3132616875, 0.9740769842]))
    loss.mean().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # raise chosen, lower rejected


def test_rewards_and_sft_term_by_hand():
    torch.testing.assert_close(implicit_rewards(PC, RC, 0.1), torch.tensor([0.1]))
    per_token = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert sft_nll(per_token, mask).item() == 2.0  # (1 + 2 + 3) / 3


def test_unknown_loss_type_is_named():
    with pytest.raises(ValueError, match="unknown loss type 'kto'"):
        preference_loss(PC, PR, RC, RR, loss_type="kto")
