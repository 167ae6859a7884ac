"""Loss terms: built-ins against hand-computed values, composition, weight ramps,
input renaming and the errors that name the term and the tensor."""

from __future__ import annotations

import math

import pytest
import torch

import gancore
from gancore.builtins.losses import L1, L2, Adversarial, CrossEntropy, TotalVariation
from gancore.losses import LossSum, MissingTensor


pytestmark = pytest.mark.usefixtures("builtins_only")


def close(a: torch.Tensor | float, b: float) -> bool:
    return math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-7)


PRED = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
TARGET = torch.tensor([[0.0, 0.0], [0.5, 1.0]])


def test_l1():
    # |1| + |-2| + 0 + |2| = 5 over 4 elements
    assert close(L1().compute(pred=PRED, target=TARGET), 5 / 4)
    # per sample: (1 + 2) and (0 + 2), mean over the batch = 2.5
    assert close(L1(reduction="sum_per_sample").compute(pred=PRED, target=TARGET), 2.5)


def test_l2():
    # 1 + 4 + 0 + 4 = 9 over 4
    assert close(L2().compute(pred=PRED, target=TARGET), 9 / 4)
    assert close(L2(reduction="sum_per_sample").compute(pred=PRED, target=TARGET), (5 + 4) / 2)


def test_tv():
    image = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])  # [1, 1, 2, 2]
    # vertical diffs: 3, 4 -> mean 3.5; horizontal: 1, 2 -> mean 1.5
    assert close(TotalVariation().compute(image=image), 3.5 + 1.5)
    assert close(TotalVariation(norm="l2").compute(image=image), (9 + 16) / 2 + (1 + 4) / 2)
    assert close(TotalVariation().compute(image=torch.full((2, 3, 4, 4), 0.7)), 0.0)


def test_ce():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    # sample 0: uniform -> log 2; sample 1: p(class 0) = 3/4 -> -log(3/4)
    assert close(CrossEntropy().compute(logits=logits, target=target), (math.log(2) - math.log(0.75)) / 2)


@pytest.mark.parametrize("mode,target,expected", [
    # logits 0 and 2
    ("nonsaturating", "real", (math.log(2) + math.log(1 + math.exp(-2))) / 2),   # softplus(-x)
    ("nonsaturating", "fake", (math.log(2) + math.log(1 + math.exp(2))) / 2),    # softplus(x)
    ("hinge", "real", (1 + 0) / 2),                                              # relu(1 - x)
    ("hinge", "fake", (1 + 3) / 2),                                              # relu(1 + x)
    ("lsgan", "real", (1 + 1) / 2),                                              # (x - 1)^2
    ("lsgan", "fake", (0 + 4) / 2),                                              # x^2
])
def test_adversarial_modes(mode, target, expected):
    logits = torch.tensor([0.0, 2.0])
    assert close(Adversarial(mode=mode, target=target).compute(logits=logits), expected)


def term(part: str, **options):
    """A registered loss term; like ``gancore.loss`` but also takes the ``name`` option."""
    return gancore.registry().get(part, "loss").build(options)


def test_registered_names_are_the_default_log_names():
    assert gancore.loss("tv").name == "tv"
    assert term("l1", name="recon").name == "recon"
    assert isinstance(gancore.loss("adversarial"), Adversarial)


def test_gancore_loss_takes_the_name_option():
    assert gancore.loss("l1", name="recon").name == "recon"


# ---------------------------------------------------------------------------------------
# composition and logging


def test_composition_total_and_parts():
    ctx = {"image": torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]]), "pred": PRED, "target": TARGET}
    a = gancore.loss("tv")
    b = gancore.loss("l1", weight=2.0)
    total, parts = (a + 0.5 * b).evaluate(ctx)
    assert set(parts) == {"tv", "l1"}
    assert close(parts["tv"], 5.0)
    assert close(parts["l1"], 0.5 * 2.0 * 1.25)  # scaling multiplies the configured weight
    assert close(total, 5.0 + 1.25)
    assert b.config.weight == 2.0  # scaling made a copy; the original is untouched


def test_sum_of_sums_and_scaled_sum():
    ctx = {"pred": PRED, "target": TARGET}
    s = gancore.loss("l1") + gancore.loss("l2")
    total, parts = (0.5 * s).evaluate(ctx)
    assert close(parts["l1"], 0.5 * 1.25) and close(parts["l2"], 0.5 * 2.25)
    assert close(total, 0.5 * (1.25 + 2.25))
    assert len(s + gancore.loss("tv", inputs={"image": "pred"})) == 3
    assert close(s(ctx), 1.25 + 2.25)  # forward is the total


def test_total_carries_gradient():
    x = PRED.clone().requires_grad_(True)
    total, _ = (gancore.loss("l2") + gancore.loss("l1")).evaluate({"pred": x, "target": TARGET})
    total.backward()
    expected = 2 * (PRED - TARGET) / 4 + torch.sign(PRED - TARGET) / 4
    assert torch.allclose(x.grad, expected)


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match=r"two loss terms are named \['l1'\]; give one a distinct `name`"):
        gancore.loss("l1") + gancore.loss("l1")
    ok = gancore.loss("l1") + term("l1", name="l1_b")
    assert [t.name for t in ok] == ["l1", "l1_b"]


# ---------------------------------------------------------------------------------------
# weights over time


def test_weight_ramp():
    t = gancore.loss("l1", weight=2.0, start=10, ramp=4)
    assert [t.weight_at(s) for s in (0, 9)] == [0.0, 0.0]
    assert [t.weight_at(s) for s in (10, 11, 12, 13, 14, 1000)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert gancore.loss("l1", weight=3.0, start=5).weight_at(4) == 0.0
    assert gancore.loss("l1", weight=3.0, start=5).weight_at(5) == 3.0
    assert gancore.loss("l1", weight=3.0, ramp=2).weight_at(0) == 1.5


def test_zero_weight_terms_are_skipped_and_not_logged():
    ctx = {"pred": PRED, "target": TARGET}
    s = gancore.loss("l1", start=3) + gancore.loss("l2")
    total, parts = s.evaluate(ctx, step=2)
    assert list(parts) == ["l2"] and close(total, 2.25)
    total, parts = s.evaluate(ctx, step=3)
    assert list(parts) == ["l1", "l2"] and close(total, 1.25 + 2.25)
    total, parts = gancore.loss("l1", start=3).evaluate(ctx, step=0)
    assert parts == {} and float(total) == 0.0


# ---------------------------------------------------------------------------------------
# reading the context


def test_inputs_renaming():
    t = gancore.loss("l1", inputs={"pred": "recon", "target": "real"})
    assert t.sources == {"pred": "recon", "target": "real"}
    assert close(t({"recon": PRED, "real": TARGET}), 1.25)


def test_renaming_an_input_the_term_does_not_read():
    with pytest.raises(ValueError, match=r"inputs renames \['img'\], but the term reads only \['image'\]"):
        gancore.loss("tv", inputs={"img": "fake"})


def test_missing_tensor_names_term_and_tensor():
    t = term("l1", name="recon_l1", inputs={"pred": "recon"})
    with pytest.raises(MissingTensor) as info:
        (gancore.loss("l2") + t).evaluate({"pred": PRED, "target": TARGET, "_private": 1})
    assert str(info.value) == ("loss 'recon_l1' reads 'recon', which this phase does not provide "
                               "(it has: pred, target)")
    assert isinstance(info.value, KeyError)


def test_losssum_reads():
    s = gancore.loss("l1", inputs={"pred": "recon"}) + gancore.loss("tv", inputs={"image": "fake"})
    assert s.reads == {"recon", "target", "fake"}
