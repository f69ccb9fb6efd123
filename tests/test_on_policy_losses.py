"""The on-policy losses against hand computation on small distributions (plain Python math, not torch):
the sampled-token estimator (with its baseline and clipping), reverse KL over the student's top-K support
(renormalised, with a tail bucket, united with the teacher's), per-token clipping, token weights."""

from __future__ import annotations

import math

import pytest
import torch

from fsdistill.distill.losses import (
    TeacherTargets,
    clip_per_token,
    distillation_loss,
    distillation_terms,
    first_occurrences,
    sampled_token,
)
from fsdistill.distill.weighting import token_weights, top_fraction

STUDENT = [1.0, 0.0, -1.0, 0.5]
TEACHER = [0.0, 1.0, 0.0, -0.5]


def softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def one_row(values):
    return torch.tensor([values], dtype=torch.float32)


MASK = torch.ones(1, dtype=torch.bool)
OPTIONS = dict(temperature=1.0, beta=0.5, scale_by_temperature_squared=False)


def sampled_token_at(y: int, teacher: TeacherTargets, **options):
    """sampled_token on the one-row STUDENT at sampled id y (temperature 1 unless given) -> (loss, divergence,
    count, the gradient of the loss at the student's logits)."""
    logits = one_row(STUDENT).requires_grad_()
    loss, divergence, count = sampled_token(
        logits, teacher, torch.tensor([y]), MASK, **{"temperature": 1.0, **options}
    )
    loss.backward()
    return loss, divergence, count, logits.grad[0]


@pytest.mark.parametrize("baseline", [False, True])
@pytest.mark.parametrize("clip", [None, 0.1])
def test_sampled_token_matches_hand_computation(baseline, clip):
    y = 1
    ps, pt = softmax(STUDENT), softmax(TEACHER)
    advantage = math.log(pt[y]) - math.log(ps[y]) + (kl(ps, pt) if baseline else 0.0)
    if clip is not None:
        advantage = max(-clip, min(clip, advantage))
    expected_value = -advantage * math.log(ps[y])
    # d/dz of -A * log p_s(y) with A held fixed: -A * (onehot(y) - p_s)
    expected_grad = [-advantage * ((1.0 if i == y else 0.0) - ps[i]) for i in range(4)]

    loss, divergence, count, grad = sampled_token_at(
        y, TeacherTargets(logits=one_row(TEACHER)), baseline=baseline, clip=clip
    )
    assert loss.item() == pytest.approx(expected_value, rel=1e-5)
    assert divergence.item() == pytest.approx(kl(ps, pt), rel=1e-5)  # what is logged: the per-token KL
    assert int(count) == 1
    assert grad.tolist() == pytest.approx(expected_grad, rel=1e-5, abs=1e-7)


def test_sampled_token_gradient_is_reverse_kl_gradient_in_expectation():
    """Summed over y with weights p_s(y), the estimator's gradient is reverse KL's exact gradient (with and
    without the baseline, which only lowers the variance)."""
    ps = softmax(STUDENT)
    exact = one_row(STUDENT).requires_grad_()
    reverse, _ = distillation_loss(
        "reverse_kl", exact, TeacherTargets(logits=one_row(TEACHER)), MASK, support="full", **OPTIONS
    )
    reverse.backward()
    for baseline in (False, True):
        expected = torch.zeros(4)
        for y in range(4):
            grad = sampled_token_at(y, TeacherTargets(logits=one_row(TEACHER)), baseline=baseline)[3]
            expected += ps[y] * grad
        torch.testing.assert_close(expected, exact.grad[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [None, 0.1])
def test_sampled_token_from_the_teachers_token_log_probability_alone(clip):
    """A served teacher gives log p_t(y) only: the same loss and gradient as from its logits (temperature 1, no
    baseline), and the logged divergence is the single-sample estimate log p_s(y) - log p_t(y), not a KL it
    cannot compute."""
    y = 1
    ps, pt = softmax(STUDENT), softmax(TEACHER)
    options = {"baseline": False, "clip": clip}
    expected = sampled_token_at(y, TeacherTargets(logits=one_row(TEACHER)), **options)
    served = TeacherTargets(token_log_probs=torch.tensor([math.log(pt[y])]))
    loss, divergence, count, grad = sampled_token_at(y, served, **options)
    assert loss.item() == pytest.approx(expected[0].item(), rel=1e-6) and int(count) == 1
    torch.testing.assert_close(grad, expected[3])
    assert divergence.item() == pytest.approx(math.log(ps[y]) - math.log(pt[y]), rel=1e-5)
    for refused in (dict(temperature=2.0), dict(baseline=True), dict(weighting=lambda kl: kl)):
        with pytest.raises(ValueError, match="whole distribution"):
            sampled_token_at(y, served, **{"baseline": False, **refused})


@pytest.mark.parametrize(
    "topk_from, support, ids",
    [
        ("student", "renormalize", [0, 3]),  # the student's top-2: logits 1.0 and 0.5
        ("student", "tail_bucket", [0, 3]),
        ("union", "renormalize", [0, 3, 1]),  # with the teacher's top-2 {1, 0}: id 0 counts once
        ("union", "tail_bucket", [0, 3, 1]),
    ],
)
def test_reverse_kl_over_the_students_support_matches_hand_computation(topk_from, support, ids):
    teacher = [0.0, 1.0, -2.0, -0.5]  # top-2: ids 1 and 0
    ps, pt = softmax(STUDENT), softmax(teacher)
    p, q = [ps[i] for i in ids], [pt[i] for i in ids]
    if support == "tail_bucket":
        expected = kl([*p, 1 - sum(p)], [*q, 1 - sum(q)])
    else:
        expected = kl([v / sum(p) for v in p], [v / sum(q) for v in q])
    loss, divergence, count = distillation_terms(
        "reverse_kl",
        one_row(STUDENT),
        TeacherTargets(logits=one_row(teacher)),
        MASK,
        support=support,
        topk_from=topk_from,
        top_k=2,
        **OPTIONS,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert divergence.item() == pytest.approx(expected, rel=1e-5)
    assert int(count) == 1


def test_union_with_the_same_ids_equals_the_students_support():
    """When both top-K sets coincide the union holds each id once: the same loss as the student's alone."""
    same = [1.0, 0.9, -1.0, -2.0]
    args = (one_row(same), TeacherTargets(logits=one_row([0.5, 1.0, -3.0, -1.0])), MASK)
    union, _, _ = distillation_terms(
        "reverse_kl", *args, support="renormalize", topk_from="union", top_k=2, **OPTIONS
    )
    student, _, _ = distillation_terms(
        "reverse_kl", *args, support="renormalize", topk_from="student", top_k=2, **OPTIONS
    )
    assert union.item() == pytest.approx(student.item(), rel=1e-6)


def test_first_occurrences_marks_repeats():
    ids = torch.tensor([[5, 3, 5, 1, 3, 7]])
    assert first_occurrences(ids).tolist() == [[True, True, False, True, False, True]]


def test_clip_per_token_caps_the_value_and_scales_the_gradient():
    per_token = torch.tensor([0.5, 2.0], requires_grad=True)
    clipped = clip_per_token(per_token, 1.0)
    clipped.sum().backward()
    assert clipped.tolist() == pytest.approx([0.5, 1.0])
    assert per_token.grad.tolist() == pytest.approx([1.0, 0.5])  # scaled down, not zeroed


def test_clipping_applies_to_the_loss_not_the_logged_divergence():
    student = torch.tensor([STUDENT, [3.0, -3.0, 0.0, 0.0]])
    teacher = torch.tensor([TEACHER, [-3.0, 3.0, 0.0, 0.0]])
    kls = [kl(softmax(s), softmax(t)) for s, t in zip(student.tolist(), teacher.tolist())]
    cap = (kls[0] + kls[1]) / 2  # between the two tokens' KLs
    loss, divergence, _ = distillation_terms(
        "reverse_kl",
        student,
        TeacherTargets(logits=teacher),
        torch.ones(2, dtype=torch.bool),
        support="full",
        clip=cap,
        **OPTIONS,
    )
    assert loss.item() == pytest.approx(min(kls[0], cap) + min(kls[1], cap), rel=1e-5)
    assert divergence.item() == pytest.approx(sum(kls), rel=1e-5)


def test_top_fraction_keeps_the_largest_divergences_ties_in_order():
    weights = top_fraction(torch.tensor([0.1, 0.5, 0.3, 0.5]), 0.5)
    assert weights.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert top_fraction(torch.tensor([0.1, 0.5, 0.3]), 0.5).tolist() == [0.0, 1.0, 1.0]  # ceil(1.5) = 2
    assert token_weights("uniform", 0.5) is None


def test_token_weights_multiply_each_tokens_loss():
    student = torch.tensor([STUDENT, [3.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    teacher = torch.tensor([TEACHER, [-3.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.1]])
    kls = [kl(softmax(s), softmax(t)) for s, t in zip(student.tolist(), teacher.tolist())]
    loss, divergence, count = distillation_terms(
        "reverse_kl",
        student,
        TeacherTargets(logits=teacher),
        torch.ones(3, dtype=torch.bool),
        support="full",
        weighting=token_weights("top_fraction", 0.34),  # ceil(1.02) = 2 of 3 tokens
        **OPTIONS,
    )
    assert loss.item() == pytest.approx(sum(sorted(kls)[1:]), rel=1e-5)
    assert divergence.item() == pytest.approx(sum(kls), rel=1e-5) and int(count) == 3


@pytest.mark.parametrize(
    "name, support",
    [("topk_logit_mse", "renormalize"), ("forward_kl", "tail_bucket"), ("generalized_jsd", "full")],
)
def test_without_options_the_terms_are_exactly_the_paper_loss(name, support):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, 11, generator=g)
    full = torch.randn(5, 11, generator=g)
    if support == "full":
        teacher = TeacherTargets(logits=full)
    else:
        top = full.topk(4, dim=-1)
        teacher = TeacherTargets(
            topk_values=top.values,
            topk_indices=top.indices,
            logsumexp=torch.logsumexp(full, -1),
            logsumexp_temperature=1.0,
        )
    mask = torch.tensor([True, False, True, True, False])
    paper, count = distillation_loss(name, student, teacher, mask, support=support, **OPTIONS)
    terms, divergence, count2 = distillation_terms(name, student, teacher, mask, support=support, **OPTIONS)
    assert torch.equal(paper, terms) and torch.equal(paper, divergence) and int(count) == int(count2)


def test_masked_positions_are_left_out_of_the_sampled_token_loss():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    targets = torch.tensor([1, 2, 3, 4])
    mask = torch.tensor([True, False, True, False])
    full = sampled_token(
        student, TeacherTargets(logits=teacher), targets, mask, temperature=1.0, baseline=True
    )
    garbage = student.clone()
    garbage[~mask] = 1e4  # what the masked positions hold must not matter
    kept = sampled_token(
        garbage, TeacherTargets(logits=teacher), targets, mask, temperature=1.0, baseline=True
    )
    assert torch.equal(full[0], kept[0]) and torch.equal(full[1], kept[1]) and int(full[2]) == 2
