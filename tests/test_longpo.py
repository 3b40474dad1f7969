"""LongPO's loss against a hand computation and its limits; answer log-probs from logits."""

import math

import pytest
import torch

from llamak.train.longpo import LongPOWeights, answer_logps, longpo_loss


def hand(pw, pl, rw, rl, nll, beta, pref_weight, nll_weight):
    z = beta * ((pw - pl) - (rw - rl))
    return nll_weight * nll + pref_weight * -math.log(1 / (1 + math.exp(-z)))


def test_loss_matches_a_hand_computation():
    pw, pl, rw, rl, nll = [-40.0, -55.0], [-48.0, -50.0], [-42.0, -52.0], [-47.0, -49.0], [2.1, 1.7]
    for w in (LongPOWeights(), LongPOWeights(beta=0.5, pref_weight=0.3, nll_weight=0.7)):
        loss, metrics = longpo_loss(*(torch.tensor(x) for x in (pw, pl, rw, rl, nll)), weights=w)
        expected = sum(hand(*row, w.beta, w.pref_weight, w.nll_weight) for row in zip(pw, pl, rw, rl, nll)) / 2
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        margins = [w.beta * ((a - b) - (c - d)) for a, b, c, d in zip(pw, pl, rw, rl)]
        assert metrics["rewards/margins"].item() == pytest.approx(sum(margins) / 2, rel=1e-6)
        assert metrics["rewards/accuracies"].item() == pytest.approx(sum(m > 0 for m in margins) / 2)


def test_limits_beta_zero_and_weights():
    args = [torch.tensor([-40.0]), torch.tensor([-48.0]), torch.tensor([-42.0]), torch.tensor([-47.0]), torch.tensor([2.0])]
    loss, m = longpo_loss(*args, weights=LongPOWeights(beta=0.0, pref_weight=1.0, nll_weight=0.0))
    assert loss.item() == pytest.approx(math.log(2))  # β → 0: no preference signal, −log σ(0)
    only_nll, _ = longpo_loss(*args, weights=LongPOWeights(beta=0.5, pref_weight=0.0, nll_weight=1.0))
    assert only_nll.item() == pytest.approx(2.0)
    only_pref, _ = longpo_loss(*args, weights=LongPOWeights(beta=0.5, pref_weight=1.0, nll_weight=0.0))
    assert only_pref.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * ((-40 + 48) - (-42 + 47))))))
    # the gradient pushes chosen up and rejected down
    pw, pl = torch.tensor([-40.0], requires_grad=True), torch.tensor([-48.0], requires_grad=True)
    longpo_loss(pw, pl, *args[2:], weights=LongPOWeights(beta=0.5, pref_weight=1.0, nll_weight=0.0))[0].backward()
    assert pw.grad.item() < 0 < pl.grad.item()


def test_answer_logps_sums_only_labelled_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    got = answer_logps(logits, labels)
    logp = logits.log_softmax(-1)
    expected = [logp[0, 1, 3] + logp[0, 2, 4], logp[1, 0, 1] + logp[1, 1, 2] + logp[1, 2, 6] + logp[1, 3, 0]]
    assert torch.allclose(got, torch.stack(expected))
