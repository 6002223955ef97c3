"""Multi-criterion reward-model losses: Bradley-Terry per criterion with missing labels, rating
regression, per-criterion pairwise accuracy; hand-computed numbers."""

import math

import pytest
import torch

from qwen25_rl.algorithms import (
    DEFAULT_CRITERIA,
    bradley_terry_loss,
    multi_criterion_bt_loss,
    pairwise_accuracy,
    rating_loss,
)


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), the BT term of a pair whose preferred lead is -x."""
    return math.log1p(math.exp(x))


def case(requires_grad=False):
    """2 pairs x 2 criteria. Entry (1, 0) has no label; its scores are far apart so any leak
    into the loss would show. Labelled entries: pref * (r_ch - r_rej) = 1, -2, 3."""
    chosen = torch.tensor([[1.0, 0.0], [2.0, 1.5]], dtype=torch.float64, requires_grad=requires_grad)
    rejected = torch.tensor([[0.0, 2.0], [30.0, -1.5]], dtype=torch.float64, requires_grad=requires_grad)
    preference = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    return chosen, rejected, preference


def test_default_criteria_are_the_six_of_the_qwen25_report_in_order():
    assert DEFAULT_CRITERIA == ("truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing")


def test_bt_loss_sums_over_labelled_entries_only_and_divides_by_their_count():
    chosen, rejected, pref = case()
    out = multi_criterion_bt_loss(chosen, rejected, pref)
    # -log sigmoid(z) = log(1 + e^-z) for z = 1, -2, 3
    assert out.loss.item() == pytest.approx((softplus(-1) + softplus(2) + softplus(-3)) / 3, abs=1e-12)
    assert out.metrics["accuracy"].item() == pytest.approx(2 / 3)  # the z = -2 entry is wrong
    assert out.metrics["labels"].item() == 3
    assert out.metrics["margin"].item() == pytest.approx((1 - 2 + 3) / 3)
    assert all(not m.requires_grad for m in out.metrics.values())


def test_bt_loss_gradient_is_sigmoid_minus_one_per_labelled_entry_and_zero_elsewhere():
    chosen, rejected, pref = case(requires_grad=True)
    g_ch, g_rej = torch.autograd.grad(multi_criterion_bt_loss(chosen, rejected, pref).loss, (chosen, rejected))

    def sig(x):
        return 1 / (1 + math.exp(-x))

    # d(-log sigmoid(z))/dz = sigmoid(z) - 1, and dz/d r_ch = pref = +1 here, over N = 3
    want = torch.tensor([[sig(1) - 1, sig(-2) - 1], [0.0, sig(3) - 1]], dtype=torch.float64) / 3
    assert torch.allclose(g_ch, want, atol=1e-12) and torch.allclose(g_rej, -want, atol=1e-12)


def test_a_negative_preference_is_the_pair_read_the_other_way_round():
    chosen, rejected, _ = case()
    pref = torch.tensor([[-1.0, 1.0], [-1.0, -1.0]])
    a = multi_criterion_bt_loss(chosen, rejected, pref)
    b = multi_criterion_bt_loss(rejected, chosen, -pref)
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-12)
    # z = -1, -2, 28, -3
    assert a.loss.item() == pytest.approx((softplus(1) + softplus(2) + softplus(-28) + softplus(3)) / 4, abs=1e-12)


def test_margin_per_pair_and_as_one_number():
    chosen, rejected, pref = case()
    per_pair = multi_criterion_bt_loss(chosen, rejected, pref, margin=torch.tensor([0.5, 1.0]))
    # z - m_p = 1 - 0.5, -2 - 0.5, 3 - 1.0
    assert per_pair.loss.item() == pytest.approx((softplus(-0.5) + softplus(2.5) + softplus(-2)) / 3, abs=1e-12)
    one = multi_criterion_bt_loss(chosen, rejected, pref, margin=0.5)
    assert one.loss.item() == pytest.approx((softplus(-0.5) + softplus(2.5) + softplus(-2.5)) / 3, abs=1e-12)
    scalar_tensor = multi_criterion_bt_loss(chosen, rejected, pref, margin=torch.tensor(0.5))
    assert scalar_tensor.loss.item() == pytest.approx(one.loss.item(), abs=1e-12)
    # the metrics describe the scores, not the margin target
    assert per_pair.metrics["margin"].item() == pytest.approx(2 / 3) and per_pair.metrics["accuracy"].item() == pytest.approx(2 / 3)


def test_centering_term_adds_the_squared_score_sums_of_labelled_entries():
    chosen, rejected, pref = case()
    out = multi_criterion_bt_loss(chosen, rejected, pref, centering_coef=0.1)
    # (r_ch + r_rej)^2 = 1, 4, 0 on the labelled entries; the unlabelled (2 + 30)^2 is left out
    bt = softplus(-1) + softplus(2) + softplus(-3)
    assert out.loss.item() == pytest.approx((bt + 0.1 * 5) / 3, abs=1e-12)


def test_global_label_count_makes_micro_batches_add_up_to_the_whole_batch():
    chosen, rejected, pref = case(requires_grad=True)
    whole = multi_criterion_bt_loss(chosen, rejected, pref, margin=torch.tensor([0.2, 0.3]), centering_coef=0.05)
    g_whole = torch.autograd.grad(whole.loss, (chosen, rejected))
    halves = [
        multi_criterion_bt_loss(chosen[i : i + 1], rejected[i : i + 1], pref[i : i + 1], margin=m, num_labels=3, centering_coef=0.05)
        for i, m in ((0, torch.tensor([0.2])), (1, torch.tensor([0.3])))
    ]
    assert [h.metrics["labels"].item() for h in halves] == [2, 1]
    total = halves[0].loss + halves[1].loss
    assert total.item() == pytest.approx(whole.loss.item(), abs=1e-12)
    g_halves = torch.autograd.grad(total, (chosen, rejected))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_halves, g_whole))
    as_tensor = multi_criterion_bt_loss(chosen[:1], rejected[:1], pref[:1], margin=torch.tensor([0.2]), num_labels=torch.tensor(3.0))
    assert as_tensor.loss.item() == pytest.approx(
        multi_criterion_bt_loss(chosen[:1], rejected[:1], pref[:1], margin=torch.tensor([0.2]), num_labels=3).loss.item()
    )


def test_an_all_unlabelled_batch_is_a_loss_of_zero_with_zero_gradient_not_nan():
    chosen = torch.randn(3, 6, requires_grad=True)
    rejected = torch.randn(3, 6, requires_grad=True)
    out = multi_criterion_bt_loss(chosen, rejected, torch.zeros(3, 6), centering_coef=0.1)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(chosen.grad, torch.zeros_like(chosen))
    assert torch.equal(rejected.grad, torch.zeros_like(rejected))
    assert {k: v.item() for k, v in out.metrics.items()} == {"accuracy": 0.0, "labels": 0.0, "margin": 0.0}
    # with a global count (other micro-batches had labels) it is still exactly zero
    assert multi_criterion_bt_loss(chosen, rejected, torch.zeros(3, 6), num_labels=7).loss.item() == 0.0


def test_an_exact_tie_of_scores_counts_as_wrong():
    out = multi_criterion_bt_loss(torch.tensor([[1.0]]), torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    assert out.metrics["accuracy"].item() == 0.0 and out.loss.item() == pytest.approx(math.log(2))


def test_with_one_criterion_and_every_pair_preferred_it_is_the_bradley_terry_loss():
    torch.manual_seed(0)
    chosen = torch.randn(5, dtype=torch.float64, requires_grad=True)
    rejected = torch.randn(5, dtype=torch.float64, requires_grad=True)
    margin = torch.rand(5, dtype=torch.float64)
    want = bradley_terry_loss(chosen, rejected, margin=margin, num_pairs=8)
    got = multi_criterion_bt_loss(chosen[:, None], rejected[:, None], torch.ones(5, 1), margin=margin, num_labels=8)
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-12)
    for a, b in zip(torch.autograd.grad(got.loss, (chosen, rejected)), torch.autograd.grad(want.loss, (chosen, rejected))):
        assert torch.allclose(a, b, atol=1e-12)
    for key in ("accuracy", "margin"):
        assert got.metrics[key].item() == pytest.approx(want.metrics[key].item(), abs=1e-12)
    plain = bradley_terry_loss(chosen, rejected)
    assert multi_criterion_bt_loss(chosen[:, None], rejected[:, None], torch.ones(5, 1)).loss.item() == pytest.approx(plain.loss.item())


def test_low_precision_scores_give_a_float32_loss():
    chosen, rejected, pref = (t.detach() for t in case())
    out = multi_criterion_bt_loss(chosen.bfloat16(), rejected.bfloat16(), pref)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx((softplus(-1) + softplus(2) + softplus(-3)) / 3, rel=1e-2)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((2, 3), (2, 3), (2, 2)), r"chosen \(2, 3\), rejected \(2, 3\) and preference \(2, 2\) must all be \[num_pairs, num_criteria\]"),
        (((2, 3), (3, 3), (2, 3)), r"rejected \(3, 3\)"),
        (((4,), (4,), (4,)), r"chosen \(4,\).*must all be \[num_pairs, num_criteria\]"),
    ],
)
def test_shape_errors_name_the_shapes(shapes, message):
    ch, rej, pref = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        multi_criterion_bt_loss(ch, rej, pref)
    with pytest.raises(ValueError, match=message):
        pairwise_accuracy(ch, rej, pref)


def test_bad_margin_shape_label_count_and_preference_values_are_errors():
    chosen, rejected, pref = case()
    with pytest.raises(ValueError, match=r"margin has shape \(3,\), expected \(\) or \(2,\) \(one per pair\)"):
        multi_criterion_bt_loss(chosen, rejected, pref, margin=torch.zeros(3))
    with pytest.raises(ValueError, match="num_labels must be positive, got 0.0"):
        multi_criterion_bt_loss(chosen, rejected, pref, num_labels=0)
    with pytest.raises(ValueError, match=r"preference must hold only \+1, -1 and 0 \(no label\), got \[0.5, 2.0\]"):
        multi_criterion_bt_loss(chosen, rejected, torch.tensor([[0.5, 1.0], [2.0, 0.0]]))


def test_rating_loss_is_the_squared_error_over_rated_entries():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.5, math.nan], [2.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    out = rating_loss(pred, target, mask)
    # (1 - 1.5)^2 + (3 - 2)^2 + (4 - 4)^2 = 1.25 over 3 rated entries
    assert out.loss.item() == pytest.approx(1.25 / 3)
    assert out.metrics["mse"].item() == pytest.approx(1.25 / 3) and out.metrics["labels"].item() == 3
    (grad,) = torch.autograd.grad(out.loss, pred)
    # 2 (pred - target) / N; the NaN target passes nothing back
    assert torch.allclose(grad, torch.tensor([[-1.0, 0.0], [2.0, 0.0]], dtype=torch.float64) / 3)
    assert rating_loss(pred, target, mask, num_labels=10).loss.item() == pytest.approx(0.125)


def test_rating_loss_halves_with_the_global_count_add_up_and_an_unrated_batch_is_zero():
    torch.manual_seed(1)
    pred, target = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    mask = torch.rand(4, 3) < 0.6
    n = int(mask.sum())
    whole = rating_loss(pred, target, mask).loss
    halves = rating_loss(pred[:2], target[:2], mask[:2], num_labels=n).loss + rating_loss(pred[2:], target[2:], mask[2:], num_labels=n).loss
    assert halves.item() == pytest.approx(whole.item(), abs=1e-12)
    p = torch.randn(2, 3, requires_grad=True)
    out = rating_loss(p, torch.full((2, 3), math.nan), torch.zeros(2, 3, dtype=torch.bool))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(p.grad, torch.zeros_like(p)) and out.metrics["mse"].item() == 0.0


def test_rating_loss_input_errors():
    with pytest.raises(ValueError, match=r"pred \(2, 3\), target \(2, 2\) and mask \(2, 3\) must all be \[num_responses, num_criteria\]"):
        rating_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor, got torch.float32"):
        rating_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num_labels must be positive, got -1.0"):
        rating_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), num_labels=-1)


def test_pairwise_accuracy_counts_per_criterion_and_a_tie_is_wrong():
    chosen = torch.tensor([[1.0, 0.0, 5.0], [2.0, 1.0, 5.0]])
    rejected = torch.tensor([[0.0, 0.0, 1.0], [3.0, 2.0, 5.0]])
    pref = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 0.0]])
    # criterion 0: right, wrong; 1: tie (wrong), right (-1 * (1 - 2) > 0); 2: wrong, unlabelled
    correct, labelled = pairwise_accuracy(chosen, rejected, pref)
    assert correct.tolist() == [1, 1, 0] and labelled.tolist() == [2, 2, 1]
    assert correct.dtype == labelled.dtype == torch.int64
    # its totals agree with the loss's accuracy metric
    acc = multi_criterion_bt_loss(chosen, rejected, pref).metrics["accuracy"].item()
    assert acc == pytest.approx(correct.sum().item() / labelled.sum().item())
