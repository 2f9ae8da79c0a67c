"""Preference losses on sequence log-probabilities: pure functions, hand-checked in tests.

Every loss reads the implicit-reward margin of DPO (Rafailov et al. 2023, eq. 7):

    h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))

  sigmoid  -log sigmoid(beta * h)                  DPO, eq. 7
  hinge    max(0, 1 - beta * h)                    SLiC-HF (Zhao et al. 2023), as TRL writes it
  ipo      (h - 1 / (2 * beta))^2                  IPO (Azar et al. 2023), eq. 17, tau = beta

IPO's h is meant per token: TRL's `ipo` always divides each side's log-ratio by its response
length; here the caller decides through the log-prob reduction, so `mean` log-probs give TRL's
`ipo` exactly and `sum` gives eq. 17 read literally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_margin(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
               ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """h per pair, all inputs [B] -> [B]."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
                    beta: float = 0.1, loss_type: str = "sigmoid") -> torch.Tensor:
    """Per-pair loss [B] (take `.mean()` for the batch loss)."""
    h = dpo_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h)
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss type {loss_type!r}; expected one of {LOSS_TYPES}")


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
                     ) -> torch.Tensor:
    """beta * (log pi - log ref): DPO's implicit reward of each response (for logging)."""
    return beta * (policy_logps - ref_logps).detach()


def sft_nll(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per chosen response token ([N, L], [N, L] -> scalar),
    the SFT term added to DPO (as in RPO / TRL's `sft` loss)."""
    return -(per_token * mask).sum() / mask.sum().clamp(min=1)
