"""Loss functions of fsdistill.distill.losses: values against hand computation, masking, the (sum, count)
contract, supports, temperature, dtypes and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from fsdistill.distill.losses import (
    DISTILLATION_LOSSES,
    TAIL_MASS_FLOOR,
    TeacherTargets,
    cross_entropy,
    distillation_loss,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_targets_from_logits,
    topk_logit_mse,
)

KL_LOSSES = ("forward_kl", "reverse_kl", "generalized_jsd")
# (name, support) pairs: topk_logit_mse is top-K by definition, the KL losses take every support.
CASES = [("topk_logit_mse", "renormalize")] + [
    (name, support) for name in KL_LOSSES for support in ("full", "renormalize", "tail_bucket")
]

# Two positions, vocabulary of 5: the tiny examples computed by hand below.
S = [[0.5, -1.0, 2.0, 0.0, 1.5], [-0.3, 0.8, 0.1, -2.0, 1.1]]
T = [[1.0, 0.2, 1.5, -0.5, 0.3], [0.4, -0.6, 1.2, 0.9, -1.0]]


# ---------------------------------------------------------------- plain-math references


def softmax(z: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(x / temperature) for x in z]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def jsd(ps: list[float], pt: list[float], beta: float) -> float:
    m = [beta * b + (1 - beta) * a for a, b in zip(ps, pt)]
    return beta * kl(pt, m) + (1 - beta) * kl(ps, m)


def top_indices(z: list[float], k: int) -> list[int]:
    return sorted(range(len(z)), key=lambda i: -z[i])[:k]


# ---------------------------------------------------------------- helpers


def targets(
    teacher_logits: torch.Tensor, support: str, k: int | None, temperature: float = 1.0
) -> TeacherTargets:
    """The TeacherTargets the core would build for this support (top_k = k except for 'full')."""
    return teacher_targets_from_logits(
        teacher_logits,
        top_k=None if support == "full" else k,
        keep_full=support == "full",
        logsumexp_temperature=temperature if support == "tail_bucket" else None,
    )


def loss(name, student, teacher_logits, mask, support, *, k=3, temperature=1.0, beta=0.5, scale=False):
    return distillation_loss(
        name,
        student,
        targets(teacher_logits, support, k, temperature),
        mask,
        temperature=temperature,
        beta=beta,
        support=support,
        scale_by_temperature_squared=scale,
    )


def random_logits(seed: int, shape: tuple[int, ...], scale: float = 2.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * scale


def all_true(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[:-1], dtype=torch.bool)


# ---------------------------------------------------------------- values by hand


def test_cross_entropy_matches_hand_computation():
    logits = torch.tensor(S)
    labels = torch.tensor([3, 1])
    loss_sum, count = cross_entropy(logits, labels, torch.tensor([True, True]))
    hand = sum(-(z[y] - math.log(sum(math.exp(x) for x in z))) for z, y in zip(S, [3, 1]))
    assert loss_sum.item() == pytest.approx(hand, rel=1e-6)
    assert count.item() == 2
    assert loss_sum.dtype == torch.float32 and loss_sum.dim() == 0 and count.dim() == 0


def test_topk_logit_mse_matches_hand_computation_and_pooled_form():
    indices = [[2, 0], [2, 3]]
    values = [[T[0][2], T[0][0]], [T[1][2], T[1][3]]]
    loss_sum, count = topk_logit_mse(
        torch.tensor(S), torch.tensor(values), torch.tensor(indices), torch.tensor([True, True])
    )
    per_token = [sum((values[n][j] - S[n][indices[n][j]]) ** 2 for j in range(2)) / 2 for n in range(2)]
    assert loss_sum.item() == pytest.approx(sum(per_token), rel=1e-6)
    assert count.item() == 2
    pooled = sum((values[n][j] - S[n][indices[n][j]]) ** 2 for n in range(2) for j in range(2)) / (2 * 2)
    assert (loss_sum / count).item() == pytest.approx(pooled, rel=1e-6)


@pytest.mark.parametrize("beta", [0.5, 0.3, 0.9])
def test_full_vocabulary_kl_family_matches_hand_computation(beta):
    student, teacher, mask = torch.tensor(S), torch.tensor(T), torch.tensor([True, True])
    ps, pt = [softmax(z) for z in S], [softmax(z) for z in T]
    fwd = loss("forward_kl", student, teacher, mask, "full")[0].item()
    rev = loss("reverse_kl", student, teacher, mask, "full")[0].item()
    js = loss("generalized_jsd", student, teacher, mask, "full", beta=beta)[0].item()
    assert fwd == pytest.approx(sum(kl(pt[n], ps[n]) for n in range(2)), rel=1e-5)
    assert rev == pytest.approx(sum(kl(ps[n], pt[n]) for n in range(2)), rel=1e-5)
    assert js == pytest.approx(sum(jsd(ps[n], pt[n], beta) for n in range(2)), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_supports_match_hand_computation(temperature):
    k = 2
    student, teacher, mask = torch.tensor(S), torch.tensor(T), torch.tensor([True, True])
    renorm_fwd = tail_fwd = tail_rev = tail_js = 0.0
    for n in range(2):
        idx = top_indices(T[n], k)
        ps, pt = softmax(S[n], temperature), softmax(T[n], temperature)
        # renormalize: softmax over the K gathered logits of each side
        qs = softmax([S[n][i] for i in idx], temperature)
        qt = softmax([T[n][i] for i in idx], temperature)
        renorm_fwd += kl(qt, qs)
        # tail bucket: the K full-softmax probabilities plus the rest of the mass
        bs = [ps[i] for i in idx] + [1 - sum(ps[i] for i in idx)]
        bt = [pt[i] for i in idx] + [1 - sum(pt[i] for i in idx)]
        tail_fwd += kl(bt, bs)
        tail_rev += kl(bs, bt)
        tail_js += jsd(bs, bt, 0.5)
    kw = dict(k=k, temperature=temperature)
    assert loss("forward_kl", student, teacher, mask, "renormalize", **kw)[0].item() == pytest.approx(
        renorm_fwd, rel=1e-5
    )
    assert loss("forward_kl", student, teacher, mask, "tail_bucket", **kw)[0].item() == pytest.approx(
        tail_fwd, rel=1e-5
    )
    assert loss("reverse_kl", student, teacher, mask, "tail_bucket", **kw)[0].item() == pytest.approx(
        tail_rev, rel=1e-5
    )
    assert loss("generalized_jsd", student, teacher, mask, "tail_bucket", **kw)[0].item() == pytest.approx(
        tail_js, rel=1e-5
    )


def test_temperature_and_temperature_squared_scaling():
    student, teacher, mask = torch.tensor(S), torch.tensor(T), torch.tensor([True, True])
    hand_t2 = sum(kl(softmax(T[n], 2.0), softmax(S[n], 2.0)) for n in range(2))
    hand_t1 = sum(kl(softmax(T[n]), softmax(S[n])) for n in range(2))
    at_t2 = loss("forward_kl", student, teacher, mask, "full", temperature=2.0)[0].item()
    scaled = loss("forward_kl", student, teacher, mask, "full", temperature=2.0, scale=True)[0].item()
    assert at_t2 == pytest.approx(hand_t2, rel=1e-5)
    assert abs(at_t2 - hand_t1) > 0.05  # the temperature really changes the value
    assert scaled == pytest.approx(4.0 * hand_t2, rel=1e-5)


def test_topk_logit_mse_refuses_temperature():
    """Raw logits: the dispatch refuses a temperature or T^2 scaling instead of silently ignoring them."""
    student, teacher, mask = torch.tensor(S), torch.tensor(T), torch.tensor([True, True])
    with pytest.raises(ValueError, match="raw logits"):
        loss("topk_logit_mse", student, teacher, mask, "renormalize", temperature=2.0)
    with pytest.raises(ValueError, match="raw logits"):
        loss("topk_logit_mse", student, teacher, mask, "renormalize", scale=True)


# ---------------------------------------------------------------- identities and sanity


@pytest.mark.parametrize(
    "name,support,temperature", [(n, s, 1.0) for n, s in CASES] + [(n, s, 0.5) for n, s in CASES[1:]]
)
def test_zero_for_identical_inputs(name, support, temperature):
    logits = random_logits(0, (6, 11))
    loss_sum, count = loss(
        name, logits, logits.clone(), all_true(logits), support, k=4, temperature=temperature
    )
    assert count.item() == 6
    assert abs(loss_sum.item()) < 1e-5


@pytest.mark.parametrize("name,support", CASES)
def test_positive_for_different_inputs(name, support):
    student, teacher = random_logits(1, (6, 11)), random_logits(2, (6, 11))
    assert loss(name, student, teacher, all_true(student), support, k=4)[0].item() > 0.1


@pytest.mark.parametrize("support", ["full", "renormalize", "tail_bucket"])
def test_generalized_jsd_endpoints_are_the_two_kls(support):
    student, teacher = random_logits(3, (5, 9)), random_logits(4, (5, 9))
    mask = all_true(student)
    fwd = loss("forward_kl", student, teacher, mask, support, k=4)[0]
    rev = loss("reverse_kl", student, teacher, mask, support, k=4)[0]
    assert not torch.isclose(fwd, rev)  # the endpoint check below can tell the two apart
    assert torch.equal(loss("generalized_jsd", student, teacher, mask, support, k=4, beta=0.0)[0], fwd)
    assert torch.equal(loss("generalized_jsd", student, teacher, mask, support, k=4, beta=1.0)[0], rev)


def test_generalized_jsd_half_is_symmetric_and_at_most_log2_per_token():
    student, teacher = random_logits(5, (6, 9), scale=4.0), random_logits(6, (6, 9), scale=4.0)
    for n in range(6):
        one = torch.zeros(6, dtype=torch.bool)
        one[n] = True
        value = loss("generalized_jsd", student, teacher, one, "full", beta=0.5)[0].item()
        swapped = loss("generalized_jsd", teacher, student, one, "full", beta=0.5)[0].item()
        assert 0.0 < value <= math.log(2)
        assert value == pytest.approx(swapped, rel=1e-5)
    # beta <-> 1 - beta with the roles swapped is the same mixture and the same weights
    mask = all_true(student)
    a = loss("generalized_jsd", student, teacher, mask, "full", beta=0.2)[0].item()
    b = loss("generalized_jsd", teacher, student, mask, "full", beta=0.8)[0].item()
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize("name", KL_LOSSES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_supports_agree_when_k_equals_vocabulary(name, temperature):
    """With K = V renormalize and tail_bucket are the full distribution; the empty tail adds no NaN."""
    student, teacher = random_logits(7, (5, 8)), random_logits(8, (5, 8))
    results = {}
    for support in ("full", "renormalize", "tail_bucket"):
        x = student.clone().requires_grad_(True)
        loss_sum, _ = loss(name, x, teacher, all_true(x), support, k=8, temperature=temperature)
        loss_sum.backward()
        assert torch.isfinite(loss_sum) and torch.isfinite(x.grad).all()
        results[support] = (loss_sum.detach(), x.grad)
    for support in ("renormalize", "tail_bucket"):
        torch.testing.assert_close(results[support][0], results["full"][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[support][1], results["full"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", KL_LOSSES)
def test_tail_bucket_with_all_mass_in_top_k_is_finite(name):
    """A peaked teacher leaves a tail below float32 resolution: floored, no NaN/inf in value or gradient."""
    teacher = random_logits(9, (4, 10))
    teacher[:, 3] = 60.0
    x = random_logits(10, (4, 10)).requires_grad_(True)
    loss_sum, _ = loss(name, x, teacher, all_true(x), "tail_bucket", k=2)
    loss_sum.backward()
    assert torch.isfinite(loss_sum) and loss_sum.item() > 0
    assert torch.isfinite(x.grad).all()
    lse = torch.logsumexp(teacher, dim=-1)
    assert (1 - torch.exp(torch.topk(teacher, 2).values - lse.unsqueeze(-1)).sum(-1) < TAIL_MASS_FLOOR).all()


# ---------------------------------------------------------------- masking and the (sum, count) contract


def _with_garbage(valid: torch.Tensor, mask: torch.Tensor, garbage: torch.Tensor) -> torch.Tensor:
    """Scatter the (M, V) valid rows into a (..., V) tensor whose masked rows hold ``garbage``."""
    full = garbage.expand(*mask.shape, valid.shape[-1]).clone()
    full[mask] = valid
    return full


@pytest.mark.parametrize("name,support", CASES + [("cross_entropy", "-")])
@pytest.mark.parametrize("garbage", [1e30, float("inf"), float("nan")])
def test_masked_positions_change_nothing(name, support, garbage):
    mask = torch.tensor([[True, False, True, True], [False, True, False, True]])
    valid_student, valid_teacher = random_logits(11, (5, 9)), random_logits(12, (5, 9))
    bad = torch.tensor(garbage)
    student = _with_garbage(valid_student, mask, bad).requires_grad_(True)
    teacher = _with_garbage(valid_teacher, mask, -bad)
    if name == "cross_entropy":
        labels = torch.full(mask.shape, -100)
        labels[mask] = torch.tensor([0, 4, 8, 2, 5])
        got = cross_entropy(student, labels, mask)
        want = cross_entropy(valid_student, torch.tensor([0, 4, 8, 2, 5]), all_true(valid_student))
    else:
        got = loss(name, student, teacher, mask, support, k=4)
        want = loss(name, valid_student, valid_teacher, all_true(valid_student), support, k=4)
    torch.testing.assert_close(got[0], want[0])
    assert got[1].item() == want[1].item() == 5
    got[0].backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[~mask] == 0).all() and (student.grad[mask] != 0).any()


@pytest.mark.parametrize("name,support", CASES + [("cross_entropy", "-")])
def test_all_masked_gives_zero_zero_and_zero_gradient(name, support):
    student = random_logits(13, (3, 7)).requires_grad_(True)
    teacher = random_logits(14, (3, 7))
    mask = torch.zeros(3, dtype=torch.bool)
    if name == "cross_entropy":
        loss_sum, count = cross_entropy(student, torch.full((3,), -100), mask)
    else:
        loss_sum, count = loss(name, student, teacher, mask, support, k=3, temperature=1.0)
    assert loss_sum.dtype == torch.float32 and loss_sum.item() == 0.0 and count.item() == 0
    loss_sum.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


@pytest.mark.parametrize("name,support", CASES + [("cross_entropy", "-")])
def test_halves_sum_to_the_full_batch(name, support):
    """Sums and counts add across micro-batches: what makes the core's token-weighted mean exact."""
    student, teacher = random_logits(15, (8, 9)), random_logits(16, (8, 9))
    mask = torch.tensor([True, True, False, True, True, True, False, False])
    labels = torch.arange(8) % 9

    def run(rows):
        if name == "cross_entropy":
            return cross_entropy(student[rows], labels[rows], mask[rows])
        return loss(name, student[rows], teacher[rows], mask[rows], support, k=4)

    full_sum, full_count = run(slice(0, 8))
    (a_sum, a_count), (b_sum, b_count) = run(slice(0, 3)), run(slice(3, 8))
    assert a_count.item() == 2 and b_count.item() == 3  # uneven halves: a mean of means would be wrong
    torch.testing.assert_close(a_sum + b_sum, full_sum)
    assert (a_count + b_count).item() == full_count.item() == 5


@pytest.mark.parametrize("name,support", CASES)
def test_leading_dims_equal_the_flattened_batch(name, support):
    student, teacher = random_logits(17, (2, 3, 9)), random_logits(18, (2, 3, 9))
    mask = torch.tensor([[True, False, True], [True, True, False]])
    got = loss(name, student, teacher, mask, support, k=4)
    want = loss(name, student.reshape(6, 9), teacher.reshape(6, 9), mask.reshape(6), support, k=4)
    torch.testing.assert_close(got[0], want[0])
    assert got[1].item() == want[1].item() == 4


# ---------------------------------------------------------------- gradients and dtypes


def test_forward_kl_gradient_is_softmax_difference_over_temperature():
    """d/ds KL(softmax(t/T) || softmax(s/T)) = (softmax(s/T) - softmax(t/T)) / T per position."""
    temperature = 2.0
    student, teacher = random_logits(19, (4, 6)), random_logits(20, (4, 6))
    x = student.clone().requires_grad_(True)
    loss("forward_kl", x, teacher, all_true(x), "full", temperature=temperature)[0].backward()
    hand = (torch.softmax(student / temperature, -1) - torch.softmax(teacher / temperature, -1)) / temperature
    torch.testing.assert_close(x.grad, hand)


@pytest.mark.parametrize("name,support", CASES)
def test_gradients_are_finite_and_reach_only_the_student(name, support):
    student = random_logits(21, (5, 9)).requires_grad_(True)
    teacher_logits = random_logits(22, (5, 9)).requires_grad_(True)
    teacher = targets(teacher_logits, support, 4)
    for field in ("logits", "topk_values", "logsumexp"):
        value = getattr(teacher, field)
        assert value is None or not value.requires_grad
    # a caller that hands in teacher tensors that require grad still trains the student only
    teacher.topk_values = (
        None if teacher.topk_values is None else teacher.topk_values.clone().requires_grad_(True)
    )
    if teacher.logits is not None:
        teacher.logits = teacher.logits.clone().requires_grad_(True)
    options = dict(temperature=1.0, beta=0.5, support=support, scale_by_temperature_squared=False)
    loss_sum, _ = distillation_loss(name, student, teacher, all_true(student), **options)
    loss_sum.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher_logits.grad is None
    for value in (teacher.logits, teacher.topk_values):
        assert value is None or value.grad is None


@pytest.mark.parametrize("name,support", CASES + [("cross_entropy", "-")])
def test_bf16_inputs_give_float32_close_to_float32(name, support):
    student, teacher = random_logits(23, (6, 9)).bfloat16(), random_logits(24, (6, 9)).bfloat16()
    mask = all_true(student)
    if name == "cross_entropy":
        labels = torch.arange(6)
        got, want = cross_entropy(student, labels, mask), cross_entropy(student.float(), labels, mask)
    else:
        got = loss(name, student, teacher, mask, support, k=4)
        want = loss(name, student.float(), teacher.float(), mask, support, k=4)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- teacher targets and dispatch


def test_teacher_targets_from_logits():
    logits = random_logits(25, (2, 3, 10)).requires_grad_(True)
    out = teacher_targets_from_logits(logits, top_k=4, keep_full=False, logsumexp_temperature=2.0)
    values, indices = torch.topk(logits.detach(), 4, dim=-1)
    assert out.logits is None and out.logsumexp_temperature == 2.0
    assert torch.equal(out.topk_values, values) and torch.equal(out.topk_indices, indices)
    torch.testing.assert_close(out.logsumexp, torch.logsumexp(logits.detach() / 2.0, dim=-1))
    assert not out.topk_values.requires_grad and not out.logsumexp.requires_grad
    full = teacher_targets_from_logits(logits, top_k=None, keep_full=True, logsumexp_temperature=None)
    assert torch.equal(full.logits, logits.detach()) and full.topk_values is None and full.logsumexp is None


@pytest.mark.parametrize("name,support", CASES)
def test_dispatch_routes_to_the_named_function(name, support):
    student, teacher_logits = random_logits(26, (4, 9)), random_logits(27, (4, 9))
    mask, teacher = all_true(student), targets(teacher_logits, support, 4)
    got = loss(name, student, teacher_logits, mask, support, k=4, beta=0.3)
    options = dict(temperature=1.0, support=support, scale_by_temperature_squared=False)
    want = {
        "topk_logit_mse": lambda: topk_logit_mse(student, teacher.topk_values, teacher.topk_indices, mask),
        "forward_kl": lambda: forward_kl(student, teacher, mask, **options),
        "reverse_kl": lambda: reverse_kl(student, teacher, mask, **options),
        "generalized_jsd": lambda: generalized_jsd(student, teacher, mask, beta=0.3, **options),
    }[name]()
    assert torch.equal(got[0], want[0]) and got[1].item() == want[1].item()
    assert set(DISTILLATION_LOSSES) == {n for n, _ in CASES}


def test_clear_errors():
    student, teacher_logits = random_logits(28, (3, 6)), random_logits(29, (3, 6))
    mask = all_true(student)
    kw = dict(temperature=1.0, beta=0.5, scale_by_temperature_squared=False)
    topk_only = teacher_targets_from_logits(
        teacher_logits, top_k=3, keep_full=False, logsumexp_temperature=None
    )
    full_only = teacher_targets_from_logits(
        teacher_logits, top_k=None, keep_full=True, logsumexp_temperature=None
    )
    with pytest.raises(ValueError, match="'logits'"):
        distillation_loss("forward_kl", student, topk_only, mask, support="full", **kw)
    with pytest.raises(ValueError, match="'topk_values'"):
        distillation_loss("reverse_kl", student, full_only, mask, support="renormalize", **kw)
    with pytest.raises(ValueError, match="'topk_values'"):
        distillation_loss("topk_logit_mse", student, full_only, mask, support="renormalize", **kw)
    with pytest.raises(ValueError, match="'logsumexp'"):
        distillation_loss("forward_kl", student, topk_only, mask, support="tail_bucket", **kw)
    at_t2 = teacher_targets_from_logits(teacher_logits, top_k=3, keep_full=False, logsumexp_temperature=2.0)
    with pytest.raises(ValueError, match="temperature 2.0"):
        distillation_loss("forward_kl", student, at_t2, mask, support="tail_bucket", **kw)
    with pytest.raises(ValueError, match="support must be one of"):
        distillation_loss("forward_kl", student, full_only, mask, support="top_k", **kw)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        distillation_loss("kl", student, full_only, mask, support="full", **kw)
    with pytest.raises(ValueError, match="beta"):
        distillation_loss("generalized_jsd", student, full_only, mask, support="full", **{**kw, "beta": 1.5})
    with pytest.raises(ValueError, match="mask shape"):
        distillation_loss("forward_kl", student, full_only, mask[:2], support="full", **kw)
    with pytest.raises(ValueError, match="bool"):
        distillation_loss("forward_kl", student, full_only, mask.long(), support="full", **kw)
    with pytest.raises(ValueError, match="top_k must be in"):
        teacher_targets_from_logits(teacher_logits, top_k=7, keep_full=False, logsumexp_temperature=None)
    with pytest.raises(ValueError, match="nothing to keep"):
        teacher_targets_from_logits(teacher_logits, top_k=None, keep_full=False, logsumexp_temperature=None)
