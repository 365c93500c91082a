"""Golden values for the losses, computed by hand (see each test's comment)."""

import math

import pytest
import torch
from torch import nn

from edgekd.distill.losses import ce_loss, cosine_loss, hint_loss, kd_loss

# Student logits [0, 0] -> p_s = [.5, .5]; teacher logits [ln 3, 0] -> p_t = [.75, .25] at T = 1.
S = torch.tensor([[0.0, 0.0]])
T_LOGITS = torch.tensor([[math.log(3.0), 0.0]])


def test_kd_loss_t1_half_alpha():
    # KL(p_t||p_s) = .75 ln(1.5) + .25 ln(.5) = 0.1308120; CE(label 0) = ln 2 = 0.6931472
    got = kd_loss(S, T_LOGITS, torch.tensor([0]), temperature=1.0, alpha=0.5)
    assert got.item() == pytest.approx(0.5 * 0.6931472 + 0.5 * 0.1308120, abs=1e-6)


def test_kd_loss_temperature_scales_by_t_squared():
    # At T = 2: p_t = softmax([ln3 / 2, 0]) = [0.6339746, 0.3660254];
    # KL = .6339746 * 0.2374008 + .3660254 * (-0.3119054) = 0.0363408; times T^2 = 0.1453631
    got = kd_loss(S, T_LOGITS, torch.tensor([0]), temperature=2.0, alpha=0.0)
    assert got.item() == pytest.approx(0.1453631, abs=1e-6)


def test_kd_loss_unlabeled_rows_only_add_kl():
    # Row 2 is unlabeled (-1): CE over row 1 only (ln 2); KL mean over both rows (both 0.1308120).
    s = torch.cat([S, S])
    t = torch.cat([T_LOGITS, T_LOGITS])
    got = kd_loss(s, t, torch.tensor([0, -1]), temperature=1.0, alpha=0.5)
    assert got.item() == pytest.approx(0.5 * 0.6931472 + 0.5 * 0.1308120, abs=1e-6)


def test_ce_loss_all_unlabeled_is_zero_and_differentiable():
    logits = torch.zeros(3, 4, requires_grad=True)
    loss = ce_loss(logits, torch.tensor([-1, -1, -1]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_kd_loss_is_zero_when_student_matches_teacher_and_alpha_zero():
    z = torch.randn(5, 7)
    loss = kd_loss(z, z, torch.zeros(5, dtype=torch.long), temperature=3.0, alpha=0.0)
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_hint_loss_with_identity_projection_is_mse():
    # features differ by [1, 2] and [0, 3]: squared errors 1, 4, 0, 9 -> mean 3.5
    s = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 2.0], [1.0, 4.0]])
    assert hint_loss(s, t, nn.Identity()).item() == pytest.approx(3.5)


def test_hint_loss_uses_the_projection():
    proj = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[2.0], [0.0]]))
    # projection of [1] is [2, 0]; teacher [2, 1] -> errors 0, 1 -> mean 0.5
    assert hint_loss(torch.tensor([[1.0]]), torch.tensor([[2.0, 1.0]]), proj).item() == pytest.approx(0.5)


@pytest.mark.parametrize("t, expected", [([1.0, 0.0], 0.0), ([0.0, 1.0], 1.0), ([-2.0, 0.0], 2.0)])
def test_cosine_loss(t, expected):
    loss = cosine_loss(torch.tensor([[3.0, 0.0]]), torch.tensor([t]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_feature_projection_starts_as_the_identity_at_equal_widths():
    """DistilBERT compares a student's features with the teacher's directly: at equal widths the learned
    projection starts as the identity, so a student copied from its teacher starts with no cosine loss;
    at other widths it starts as any nn.Linear does."""
    from edgekd.distill.train import projection

    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(projection(8, 8)(x), x)
        assert cosine_loss(projection(8, 8)(x), x) < 1e-6
        # at other widths: nn.Linear's own start, from the same random draws as before the identity rule
        torch.manual_seed(0)
        other = projection(8, 4)
        torch.manual_seed(0)
        assert torch.equal(other.weight, nn.Linear(8, 4).weight) and other(x).shape == (5, 4)
