"""Length-regularised DPO (PAPER.md section 3): the one place where λ acts.

Per pair (x, y_w, y_l), with ℓ(y) the token length of a response:

    Δ = β·[(log πθ(y_w|x) − log π_ref(y_w|x)) − (log πθ(y_l|x) − log π_ref(y_l|x))]
    L_DPO-L = −log σ(Δ − λ·log(ℓ(y_l) / ℓ(y_w)))

(our reading) the length term is a margin the policy must beat: a pair whose rejected response is much
longer than its chosen one asks for a larger preference gap. λ = 0 is plain sigmoid DPO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def length_margin(chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·log(ℓ_r / ℓ_c) per pair; lengths are token counts (must be positive)."""
    chosen = chosen_lengths.to(torch.float64)
    rejected = rejected_lengths.to(torch.float64)
    if bool((chosen <= 0).any()) or bool((rejected <= 0).any()):
        raise ValueError("response lengths must be positive token counts")
    return lam * (torch.log(rejected) - torch.log(chosen))


def dpo_l_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    lam: float,
) -> torch.Tensor:
    """Per-pair DPO-L loss −log σ(Δ − λ·log(ℓ_r/ℓ_c)); sequence log-probs are sums over response tokens."""
    delta = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    margin = length_margin(chosen_lengths, rejected_lengths, lam).to(delta.dtype)
    # logsigmoid keeps the loss finite for large negative arguments, where log(sigmoid(x)) underflows to -inf
    return -F.logsigmoid(delta - margin.to(delta.device))
