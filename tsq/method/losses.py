"""The training losses: the registry of loss variants and length-regularised DPO, the one place where λ acts.

`LOSSES` declares each variant of `training.loss` once, by the terms it sums; the spec's allowed values,
the trainer (`tsq.engines.train`) and `tsq sweep check` (which knob is moot under which loss) all read it.

Per pair (x, y_w, y_l), with ℓ(y) the token length of a response (see docs/method.md):

    Δ = β·[(log πθ(y_w|x) − log π_ref(y_w|x)) − (log πθ(y_l|x) − log π_ref(y_l|x))]
    L_DPO-L = −log σ(Δ − λ·log(ℓ(y_l) / ℓ(y_w)))

(our reading) the length term is a margin the policy must beat: a pair whose rejected response is much
longer than its chosen one asks for a larger preference gap. λ = 0 is plain sigmoid DPO.

The SFT term is the mean negative log-likelihood over all chosen completion tokens of the batch.

torch is imported inside the functions: the spec reads `LOSSES` and must not pay for importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LossDef:
    """One training objective, by the terms it sums: [DPO or DPO-L] + [weight · SFT]."""

    name: str
    dpo: bool  # a preference term: sigmoid DPO, or DPO-L when `length_margin`
    length_margin: bool  # the preference term carries the margin λ·log(ℓ_l/ℓ_w): λ acts
    sft: Literal["none", "one", "eta"]  # the SFT term: absent, weight 1, or weight η
    meaning: str

    def __post_init__(self) -> None:
        if self.length_margin and not self.dpo:
            raise ValueError(f"loss {self.name!r}: a length margin needs a preference term")
        if not self.dpo and self.sft == "none":
            raise ValueError(f"loss {self.name!r}: no term at all")

    @property
    def uses_lam(self) -> bool:
        return self.length_margin

    @property
    def uses_eta(self) -> bool:
        return self.sft == "eta"

    def sft_weight(self, eta: float) -> float:
        """The SFT term's weight under this loss for the trial's η (0 when there is no SFT term)."""
        return {"none": 0.0, "one": 1.0, "eta": eta}[self.sft]

    def margin_lam(self, lam: float) -> float:
        """The λ the preference term uses (0, plain sigmoid DPO, when this loss has no length margin)."""
        return lam if self.length_margin else 0.0

    def moot_knobs(self) -> tuple[str, ...]:
        """The knobs (by their search name) that change nothing under this loss."""
        return tuple(k for k, used in (("lambda", self.uses_lam), ("eta", self.uses_eta)) if not used)


LOSSES: dict[str, LossDef] = {
    d.name: d
    for d in (
        LossDef("dpo", dpo=True, length_margin=False, sft="none", meaning="sigmoid DPO alone"),
        LossDef(
            "sft", dpo=False, length_margin=False, sft="one", meaning="SFT on the chosen responses alone"
        ),
        LossDef("dpo+sft", dpo=True, length_margin=False, sft="eta", meaning="sigmoid DPO + η·SFT"),
        LossDef(
            "dpo-l+sft", dpo=True, length_margin=True, sft="eta", meaning="DPO-L(λ) + η·SFT (TokenSqueeze)"
        ),
    )
}
DEFAULT_LOSS = "dpo-l+sft"
# The spec field's type: a Literal of the registry's keys, so pydantic lists them in its error
LossName = Literal[tuple(LOSSES)]  # type: ignore[valid-type]


def loss_def(name: str) -> LossDef:
    """The registry entry for `name`; ValueError naming `training.loss` and the choices otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"training.loss: unknown loss {name!r}; expected one of {', '.join(LOSSES)}"
        ) from None


def length_margin(chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·log(ℓ_r / ℓ_c) per pair; lengths are token counts (must be positive)."""
    import torch

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
    import torch.nn.functional as F

    delta = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    if lam == 0.0:
        # no margin: skips the length check and its host sync (plain sigmoid DPO)
        return -F.logsigmoid(delta)
    margin = length_margin(chosen_lengths, rejected_lengths, lam).to(delta.dtype)
    # logsigmoid keeps the loss finite for large negative arguments, where log(sigmoid(x)) underflows to -inf
    return -F.logsigmoid(delta - margin.to(delta.device))


def sft_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """Mean NLL over every chosen completion token of the batch (token-weighted, as TRL's `sft` loss)."""
    return -(chosen_token_logps * chosen_mask).sum() / chosen_mask.sum().clamp(min=1)
