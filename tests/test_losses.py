"""DPO-L against hand-computed values (docs/method.md, section 3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tsq.method.losses import dpo_l_loss, length_margin

# One pair: policy log-probs (chosen, rejected) = (−10, −20), reference = (−12, −18), β = 0.1, so
# Δ = 0.1·[(−10 + 12) − (−20 + 18)] = 0.4; lengths ℓ_c = 10, ℓ_r = 40, so log(ℓ_r/ℓ_c) = log 4 = 1.3862944.
PAIR = {
    "policy_chosen_logps": torch.tensor([-10.0]),
    "policy_rejected_logps": torch.tensor([-20.0]),
    "ref_chosen_logps": torch.tensor([-12.0]),
    "ref_rejected_logps": torch.tensor([-18.0]),
    "chosen_lengths": torch.tensor([10]),
    "rejected_lengths": torch.tensor([40]),
    "beta": 0.1,
}


@pytest.mark.parametrize(
    ("lam", "expected"),
    [
        (0.0, 0.5130152523999526),  # log(1 + e^−0.4)
        (0.5, 0.8504244355835797),  # log(1 + e^−(0.4 − 0.5·log 4))
        (1.0, 1.3032605678116644),  # log(1 + e^−(0.4 − log 4))
    ],
)
def test_hand_computed_values(lam: float, expected: float) -> None:
    loss = dpo_l_loss(**PAIR, lam=lam)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_rejected_shorter_than_chosen_lowers_the_loss() -> None:
    # ℓ_c = 40, ℓ_r = 10 with λ = 2: margin 2·log(10/40) = −2.7725887, loss = log(1 + e^−(0.4 + 2.7725887))
    pair = {**PAIR, "chosen_lengths": torch.tensor([40]), "rejected_lengths": torch.tensor([10])}
    assert dpo_l_loss(**pair, lam=2.0).item() == pytest.approx(0.04104117326097834, rel=1e-6)


def test_equal_lengths_add_no_margin() -> None:
    # Δ = 0 and ℓ_c = ℓ_r: loss = log 2 for any λ
    loss = dpo_l_loss(
        torch.tensor([-5.0]),
        torch.tensor([-7.0]),
        torch.tensor([-5.0]),
        torch.tensor([-7.0]),
        torch.tensor([12]),
        torch.tensor([12]),
        beta=0.3,
        lam=3.0,
    )
    assert loss.item() == pytest.approx(math.log(2), rel=1e-7)


def test_length_margin_values() -> None:
    margin = length_margin(torch.tensor([10, 5]), torch.tensor([40, 5]), lam=0.5)
    assert margin.tolist() == pytest.approx([0.5 * math.log(4), 0.0])
    with pytest.raises(ValueError, match="positive"):
        length_margin(torch.tensor([0]), torch.tensor([3]), lam=1.0)


def test_lambda_zero_is_trl_sigmoid_dpo() -> None:
    # TRL 1.16 DPOTrainer, loss_type "sigmoid": −logsigmoid(β·(chosen_logratios − rejected_logratios))
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-50 * torch.rand(16, generator=g) for _ in range(4))
    lc, lr = torch.randint(1, 100, (16,), generator=g), torch.randint(1, 100, (16,), generator=g)
    trl = -F.logsigmoid(0.2 * ((pc - rc) - (pr - rr)))
    ours = dpo_l_loss(pc, pr, rc, rr, lc, lr, beta=0.2, lam=0.0)
    torch.testing.assert_close(ours, trl)


def test_stable_for_extreme_arguments() -> None:
    # Δ = 0.1·(−20000) = −2000: log(sigmoid(−2000)) underflows to −inf, logsigmoid gives exactly 2000
    loss = dpo_l_loss(
        torch.tensor([-20000.0]),
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        torch.tensor([1]),
        torch.tensor([1]),
        beta=0.1,
        lam=1.0,
    )
    assert torch.isfinite(loss).all()
    assert loss.item() == pytest.approx(2000.0)


@pytest.mark.parametrize(
    ("lam", "sigma"),
    [
        (0.0, 0.401312339887548),  # σ(−0.4)
        (1.0, 0.7283553682472773),  # σ(−(0.4 − log 4))
    ],
)
def test_gradients(lam: float, sigma: float) -> None:
    # ∂L/∂log πθ(y_w) = −β·σ(−(Δ − margin)); ∂L/∂log πθ(y_l) is its negative; a longer rejected response
    # (λ > 0) pushes harder.
    pc = PAIR["policy_chosen_logps"].clone().requires_grad_(True)
    pr = PAIR["policy_rejected_logps"].clone().requires_grad_(True)
    pair = {**PAIR, "policy_chosen_logps": pc, "policy_rejected_logps": pr}
    dpo_l_loss(**pair, lam=lam).sum().backward()
    assert pc.grad.item() == pytest.approx(-0.1 * sigma, rel=1e-6)
    assert pr.grad.item() == pytest.approx(0.1 * sigma, rel=1e-6)
