"""Optimisers from their equations against torch.optim; schedules against lr_scheduler; the range test."""

import math

import pytest
import torch
from torch import nn

import deepgrad as dg
from deepgrad import optim, schedules

STEPS = 200

# Settings per optimiser: PyTorch's defaults, then the other branches of each update rule.
SETTINGS = {
    "SGD": [dict(lr=0.05), dict(lr=0.02, momentum=0.9), dict(lr=0.02, momentum=0.9, dampening=0.3),
            dict(lr=0.02, momentum=0.9, nesterov=True)],
    "Adagrad": [dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-6)],
    "RMSprop": [dict(lr=0.01), dict(lr=0.005, alpha=0.9, momentum=0.9),
                dict(lr=0.005, centered=True), dict(lr=0.002, centered=True, momentum=0.5, eps=1e-6)],
    "Adadelta": [dict(), dict(lr=0.5, rho=0.95, eps=1e-5)],
    "Adam": [dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6)],
    "AdamW": [dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1)],
    "AMSGrad": [dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6)],
    "NAdam": [dict(), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, momentum_decay=0.01)],
    "Adamax": [dict(), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)],
}
CASES = [(name, kw) for name, kws in SETTINGS.items() for kw in kws]


def _problem(seed):
    """A random small regression network in float64 and a stream of random batches."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    batches = [(torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64))
               for _ in range(STEPS)]
    return model, batches


def _train(model, optimizer, batches):
    for x, y in batches:
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _pair(name, kwargs, seed, groups=False):
    mine_cls, torch_cls = optim.OPTIMIZERS[name]
    results = []
    for cls in (mine_cls, torch_cls):
        model, batches = _problem(seed)
        if groups:  # two parameter groups, the second at half the learning rate
            lr = kwargs.get("lr", 1.0)
            params = [{"params": model[0].parameters()},
                      {"params": model[2].parameters(), "lr": lr / 2}]
        else:
            params = model.parameters()
        results.append(_train(model, cls(params, **kwargs), batches))
    return results


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_same_parameters_as_torch_after_200_steps(name, kwargs, weight_decay):
    kwargs = dict(kwargs)
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    for seed in (0, 1):
        mine, theirs = _pair(name, kwargs, seed)
        start, _ = _problem(seed)
        for m, t, p0 in zip(mine, theirs, start.parameters(), strict=True):
            torch.testing.assert_close(m, t, rtol=1e-10, atol=1e-12)
            assert not torch.equal(m, p0.detach())  # the parameters did move


@pytest.mark.parametrize("name", list(SETTINGS))
def test_parameter_groups_are_honoured(name):
    mine, theirs = _pair(name, SETTINGS[name][-1], seed=2, groups=True)
    for m, t in zip(mine, theirs, strict=True):
        torch.testing.assert_close(m, t, rtol=1e-10, atol=1e-12)


def test_parameters_without_gradient_are_left_alone():
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    (a**2).sum().backward()
    opt.step()
    assert torch.equal(b, torch.ones(3, dtype=torch.float64)) and not torch.equal(a, b)
    assert b not in opt.state


def test_closure_is_evaluated_and_returned():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 5.0
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, -1.6], dtype=torch.float64))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95])
def test_ema_momentum_is_pytorch_momentum_with_a_rescaled_learning_rate(beta, weight_decay):
    lr = 0.1
    model, batches = _problem(3)
    ema = _train(model, optim.MomentumEMA(model.parameters(), lr=lr, beta=beta,
                                          weight_decay=weight_decay), batches)
    model, batches = _problem(3)
    sgd = _train(model, torch.optim.SGD(model.parameters(), lr=lr * (1 - beta), momentum=beta,
                                        weight_decay=weight_decay), batches)
    model, batches = _problem(3)
    same_lr = _train(model, torch.optim.SGD(model.parameters(), lr=lr, momentum=beta), batches)
    for e, s, w in zip(ema, sgd, same_lr, strict=True):
        torch.testing.assert_close(e, s, rtol=1e-10, atol=1e-12)
        assert (e - w).abs().max() > 1e-3  # at the same lr the two forms differ


def test_uncorrected_adam_first_step_is_larger_by_the_predicted_factor():
    for beta2 in (0.999, 0.9999):
        steps = []
        for corrected in (True, False):
            w = torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64, requires_grad=True)
            opt = optim.Adam([w], lr=1e-3, betas=(0.9, beta2), eps=0.0, bias_correction=corrected)
            (w**3).sum().backward()
            opt.step()
            steps.append((w.detach() - torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64)).abs())
        # corrected: every coordinate moves by exactly lr; uncorrected: (1 - b1) / sqrt(1 - b2) lr
        torch.testing.assert_close(steps[0], torch.full((3,), 1e-3, dtype=torch.float64))
        torch.testing.assert_close(steps[1] / steps[0],
                                   torch.full((3,), 0.1 / math.sqrt(1 - beta2), dtype=torch.float64))


def test_adadelta_is_not_rmsprop():
    model, batches = _problem(4)
    delta = _train(model, optim.Adadelta(model.parameters()), batches)
    model, batches = _problem(4)
    rms = _train(model, optim.RMSprop(model.parameters(), lr=1.0, alpha=0.9, eps=1e-6), batches)
    assert max((d - r).abs().max().item() for d, r in zip(delta, rms, strict=True)) > 1e-2


def test_adadelta_first_step_does_not_depend_on_the_gradient_scale():
    moves = []
    for scale in (1.0, 1e2, 1e4):
        w = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
        opt = optim.Adadelta([w], rho=0.9, eps=1e-6)
        (scale * w**2).sum().backward()
        opt.step()
        moves.append((1.0 - w[0]).item())
    # |Δ_1| = sqrt(eps) |g| / sqrt((1 - rho) g^2 + eps) ≈ sqrt(eps / (1 - rho)) for |g| >> sqrt(eps)
    for move in moves:
        assert move == pytest.approx(math.sqrt(1e-6 / 0.1), rel=1e-3)


INVALID = [
    ("SGD", dict(lr=-0.1)), ("SGD", dict(lr=0.1, momentum=-0.5)), ("SGD", dict(lr=0.1, weight_decay=-1.0)),
    ("SGD", dict(lr=0.1, nesterov=True)), ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    ("Adagrad", dict(lr=-1.0)), ("Adagrad", dict(lr_decay=-1.0)), ("Adagrad", dict(weight_decay=-1.0)),
    ("Adagrad", dict(initial_accumulator_value=-1.0)), ("Adagrad", dict(eps=-1.0)),
    ("RMSprop", dict(lr=-1.0)), ("RMSprop", dict(eps=-1.0)), ("RMSprop", dict(momentum=-1.0)),
    ("RMSprop", dict(weight_decay=-1.0)), ("RMSprop", dict(alpha=-0.5)),
    ("Adadelta", dict(lr=-1.0)), ("Adadelta", dict(rho=1.5)), ("Adadelta", dict(rho=-0.1)),
    ("Adadelta", dict(eps=-1.0)), ("Adadelta", dict(weight_decay=-1.0)),
    ("Adam", dict(lr=-1.0)), ("Adam", dict(eps=-1.0)), ("Adam", dict(betas=(1.0, 0.9))),
    ("Adam", dict(betas=(0.9, -0.1))), ("Adam", dict(weight_decay=-1.0)),
    ("AdamW", dict(lr=-1.0)), ("AdamW", dict(betas=(0.9, 1.0))), ("AdamW", dict(weight_decay=-1.0)),
    ("AMSGrad", dict(lr=-1.0)), ("AMSGrad", dict(betas=(1.0, 0.9))),
    ("NAdam", dict(lr=-1.0)), ("NAdam", dict(momentum_decay=-1.0)), ("NAdam", dict(betas=(0.9, 1.0))),
    ("Adamax", dict(lr=-1.0)), ("Adamax", dict(eps=-1.0)), ("Adamax", dict(betas=(1.0, 0.9))),
]


@pytest.mark.parametrize(("name", "kwargs"), INVALID)
def test_invalid_arguments_raise_pytorchs_message_and_name_the_argument(name, kwargs):
    mine_cls, torch_cls = optim.OPTIMIZERS[name]
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError) as theirs:
        torch_cls(w, **kwargs)
    with pytest.raises(ValueError) as mine:
        mine_cls(w, **kwargs)
    assert str(mine.value).startswith(str(theirs.value))
    argument = next(k for k in reversed(kwargs) if k != "dampening")
    assert {"nesterov": "Nesterov"}.get(argument, argument) in str(mine.value)


# Values torch.optim accepts (or does not check) and fails on later, or never: refused when built.
VALUE_ERRORS = [
    ("Adam", dict(betas=(0.9,)), r"betas must be two real numbers in \[0, 1\).*got 1: \(0.9,\)"),
    ("AdamW", dict(betas=(0.9, 0.99, 0.999)), r"betas must be two real numbers in \[0, 1\).*got 3: "),
    ("SGD", dict(lr=math.inf), r"Invalid learning rate: inf \(lr must be a finite number >= 0\)"),
    ("SGD", dict(lr=math.nan), r"Invalid learning rate: nan \(lr must be a finite number >= 0\)"),
    ("RMSprop", dict(weight_decay=math.inf), r"weight_decay must be a finite number >= 0"),
]
TYPE_ERRORS = [
    ("SGD", dict(lr="0.1"), "lr must be a real number >= 0, got str '0.1'"),
    ("SGD", dict(lr=True), "lr must be a real number >= 0, got bool"),
    ("SGD", dict(lr=torch.tensor(0.1)), "lr must be a real number >= 0, got Tensor"),
    ("SGD", dict(lr=0.1, momentum="0.9"), "momentum must be a real number >= 0"),
    ("SGD", dict(lr=0.1, dampening=None), "dampening must be a real number"),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov="yes"), "nesterov must be True or False"),
    ("Adam", dict(betas=0.9), r"betas must be two real numbers in \[0, 1\).*got float 0.9"),
    ("Adam", dict(betas=("0.9", 0.999)), r"betas\[0\] must be a real number in \[0, 1\)"),
    ("Adam", dict(eps=None), "eps must be a real number >= 0"),
    ("Adam", dict(bias_correction=1), "bias_correction must be True or False"),
    ("Adagrad", dict(lr_decay="0"), "lr_decay must be a real number >= 0"),
    ("RMSprop", dict(alpha=[0.9]), "alpha must be a real number >= 0"),
    ("RMSprop", dict(centered=None), "centered must be True or False"),
    ("Adadelta", dict(rho="0.9"), r"rho must be a real number in \[0, 1\]"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), VALUE_ERRORS)
def test_bad_values_are_refused_when_the_optimiser_is_built(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.OPTIMIZERS[name][0]([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(("name", "kwargs", "message"), TYPE_ERRORS)
def test_wrong_types_raise_type_error_naming_the_argument(name, kwargs, message):
    with pytest.raises(TypeError, match=message):
        optim.OPTIMIZERS[name][0]([torch.zeros(2, requires_grad=True)], **kwargs)


def test_adam_with_one_beta_used_to_fail_only_at_the_first_step():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([w], betas=(0.9,))
    # a list of two is as good as a tuple, and it steps
    opt = optim.Adam([w], lr=0.1, betas=[0.9, 0.99])
    (w - 1).pow(2).sum().backward()
    opt.step()
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and (w > 0).all()


def test_ema_momentum_validates_its_arguments():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid beta value: 1.0"):
        optim.MomentumEMA(w, beta=1.0)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.MomentumEMA(w, lr=-1)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        optim.MomentumEMA(w, beta=-0.1)
    with pytest.raises(TypeError, match="beta must be a real number in"):
        optim.MomentumEMA(w, beta="0.9")
    with pytest.raises(TypeError, match="lr must be a real number >= 0"):
        optim.MomentumEMA(w, lr=None)


# --- 2-D functions and trajectories --------------------------------------------------------------

def test_test_functions_have_their_stated_minima():
    zero = torch.tensor(0.0, dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert optim.quadratic(zero, zero) == 0 and optim.rosenbrock(one, one) == 0
    assert optim.saddle(zero, one) == -0.5 and optim.saddle(zero, -one) == -0.5
    for fn, x, y in [(optim.quadratic, zero, zero), (optim.rosenbrock, one, one), (optim.saddle, zero, one),
                     (optim.saddle, zero, zero)]:
        xy = torch.stack([x, y]).requires_grad_()
        (grad,) = torch.autograd.grad(fn(xy[0], xy[1]), xy)
        assert grad.abs().max() == 0  # stationary points


def test_trajectory_is_the_optimisers_path():
    path = optim.trajectory(optim.quadratic, (1.0, 1.0), lambda p: optim.SGD(p, lr=0.01), steps=50)
    assert path.shape == (51, 2) and path[0].tolist() == [1.0, 1.0]
    # gradient descent on diag(1, 25): each coordinate shrinks by its own factor (1 - lr * curvature)
    k = torch.arange(51, dtype=torch.float64)
    torch.testing.assert_close(path[:, 0], 0.99**k)
    torch.testing.assert_close(path[:, 1], 0.75**k)


def test_diverging_trajectory_is_cut_short_silently():
    path = optim.trajectory(optim.rosenbrock, (-1.0, 1.0), lambda p: optim.SGD(p, lr=0.1), steps=100)
    assert torch.isnan(path[-1]).all() and torch.isfinite(path[0]).all()


# --- schedules -----------------------------------------------------------------------------------

def _torch_lrs(make_scheduler, steps, lr=0.1, momentum=0.9):
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_step_lr_matches_torch():
    lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 40)
    assert lrs == pytest.approx([schedules.step_lr(t, 0.1, 7, 0.5) for t in range(40)], rel=1e-12)


def test_cosine_lr_matches_torch():
    lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=1e-3), 51)
    assert lrs == pytest.approx([schedules.cosine_lr(t, 0.1, 50, 1e-3) for t in range(51)], rel=1e-9)


def test_triangular_lr_matches_torch():
    lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.01, max_lr=0.2, step_size_up=9, cycle_momentum=False), 60)
    assert lrs == pytest.approx([schedules.triangular_lr(t, 0.01, 0.2, 9) for t in range(60)], rel=1e-9)


@pytest.mark.parametrize("total", [50, 101])
def test_one_cycle_lr_matches_torch(total):
    lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.3, total_steps=total, cycle_momentum=False), total)
    mine = [schedules.one_cycle_lr(t, 0.3, total) for t in range(total)]
    assert lrs == pytest.approx(mine, rel=1e-9)
    assert max(mine) == pytest.approx(0.3, rel=1e-3) and mine[0] == pytest.approx(0.3 / 25)


def test_schedules_validate_their_arguments():
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        schedules.cosine_lr(-1, 0.1, 10)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        schedules.step_lr(0, 0.0, 5)
    with pytest.raises(ValueError, match="step must be less than total"):
        schedules.one_cycle_lr(10, 0.1, 10)
    with pytest.raises(ValueError, match="pct_start"):
        schedules.one_cycle_lr(0, 0.1, 10, pct_start=1.5)


# --- the learning-rate range test ----------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return dg.data.load_digits()


def _range_test(digits, end=10.0, steps=60, seed=0):
    generator = dg.seed_everything(seed)
    model = dg.models.MLP(64, 10, width=32, depth=1, activation="relu")
    opt = optim.SGD(model.parameters(), lr=1.0)
    return schedules.lr_range_test(model, opt, digits.train, start=1e-4, end=end, steps=steps,
                                   generator=generator)


def test_range_test_sweeps_geometrically_and_finds_a_bottom(digits):
    result = _range_test(digits, end=1.0)  # SGD on this net does not blow up below 1
    assert len(result.lrs) == 60 and result.lrs[0] == 1e-4
    assert result.lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios))
    assert len(result.smoothed) == len(result.losses) == 60
    assert result.smoothed[-1] < result.smoothed[0] - 0.5  # it learned
    assert result.suggestion() == pytest.approx(result.best() / 10)


def test_range_test_stops_when_the_loss_blows_up(digits):
    result = _range_test(digits, end=1e4, steps=80)
    assert len(result.lrs) < 80  # stopped early, silently
    assert result.best() < result.lrs[-1]
    assert result.losses == _range_test(digits, end=1e4, steps=80).losses  # deterministic


def test_range_test_validates_its_arguments(digits):
    model = dg.models.MLP(64, 10, width=8, depth=1)
    opt = optim.SGD(model.parameters())
    with pytest.raises(ValueError, match="end must be greater than start"):
        schedules.lr_range_test(model, opt, digits.train, start=1.0, end=0.1)
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        schedules.lr_range_test(model, opt, digits.train, steps=1)
    with pytest.raises(ValueError, match="the range test recorded no finite loss"):
        schedules.RangeTest().best()


def test_uncorrected_adam_steps_are_larger_by_the_bias_factor_at_every_step():
    # a linear loss c_t . w: the gradients, hence m_t and v_t, do not depend on w
    torch.manual_seed(5)
    coefficients = torch.randn(60, 4, dtype=torch.float64)
    beta1, beta2 = 0.9, 0.9999
    moves = {}
    for corrected in (True, False):
        w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        opt = optim.Adam([w], lr=1e-3, betas=(beta1, beta2), eps=0.0, bias_correction=corrected)
        steps = []
        for c in coefficients:
            before = w.detach().clone()
            opt.zero_grad()
            (c * w).sum().backward()
            opt.step()
            steps.append(w.detach() - before)
        moves[corrected] = torch.stack(steps)
    t = torch.arange(1, 61, dtype=torch.float64)[:, None]
    factor = (1 - beta1**t) / (1 - beta2**t).sqrt()
    torch.testing.assert_close(moves[False], moves[True] * factor, rtol=1e-9, atol=0)


def test_pytorch_nesterov_tracks_the_look_ahead_point_of_the_original_form():
    # original: b_t = mu b_{t-1} + grad(w_{t-1} - lr mu b_{t-1}), w_t = w_{t-1} - lr b_t;
    # PyTorch's iterate is the look-ahead point w_t - lr mu b_t
    lr, mu = 0.01, 0.9
    target = torch.randn(5, dtype=torch.float64)
    scales = torch.rand(5, dtype=torch.float64) * 10

    def grad(v):
        return scales * (v - target) ** 3 + (v - target)

    w, b = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = optim.SGD([p], lr=lr, momentum=mu, nesterov=True)
    for _ in range(100):
        b = mu * b + grad(w - lr * mu * b)
        w = w - lr * b
        opt.zero_grad()
        p.grad = grad(p.detach())
        opt.step()
        torch.testing.assert_close(p.detach(), w - lr * mu * b, rtol=1e-10, atol=1e-12)


def test_schedules_follow_the_one_rule_for_bad_arguments():
    # wrong type: TypeError naming the argument; right type, bad value: ValueError
    with pytest.raises(TypeError, match="lr must be a finite number > 0"):
        schedules.step_lr(0, "0.1", 5)
    with pytest.raises(TypeError, match="step must be an int >= 0"):
        schedules.cosine_lr(1.5, 0.1, 10)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        schedules.step_lr(0, math.inf, 5)
    with pytest.raises(ValueError, match="gamma"):
        schedules.step_lr(0, 0.1, 5, gamma=math.nan)


def _reddi_final_x(make_optimizer, steps=3000, C=3.0):
    """Reddi, Kale & Kumar (2018), theorem 1: f_t(x) = C x when t = 1 mod 3, else -x, on [-1, 1],
    with rate 1/sqrt(t). The best fixed point is x = -1 (average loss (C - 2) x / 3)."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([x])
    for t in range(1, steps + 1):
        opt.param_groups[0]["lr"] = 0.5 / math.sqrt(t)
        opt.zero_grad()
        (C * x if t % 3 == 1 else -x).sum().backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
    return x.item()


def test_amsgrad_repairs_adams_non_convergence_on_reddis_example():
    betas = (0.0, 1 / (1 + 3.0**2))
    adam = _reddi_final_x(lambda p: optim.Adam(p, betas=betas))
    amsgrad = _reddi_final_x(lambda p: optim.AMSGrad(p, betas=betas))
    assert adam > 0.9        # Adam drifts to the worst point, x = +1
    assert amsgrad < -0.9    # AMSGrad finds the best one, x = -1


def test_amsgrad_denominator_never_shrinks():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optim.AMSGrad([w], lr=0.01, betas=(0.9, 0.9))
    previous = torch.zeros(3, dtype=torch.float64)
    for scale in (10.0, 1.0, 0.1, 5.0, 0.01):
        opt.zero_grad()
        (scale * w.sum() + (w ** 2).sum()).backward()
        opt.step()
        current = opt.state[w]["max_exp_avg_sq"].clone()
        assert (current >= previous).all() and (current >= opt.state[w]["exp_avg_sq"]).all()
        previous = current


def test_adamax_first_step_is_lr_in_every_coordinate():
    """u_1 = |g_1| + eps and m_1 / (1 - beta1) = g_1: the first step is lr sign(g) (up to eps)."""
    w0 = torch.tensor([1e-3, -2.0, 50.0], dtype=torch.float64)
    w = w0.clone().requires_grad_()
    opt = optim.Adamax([w], lr=0.1, eps=0.0)
    (w ** 3 / 3).sum().backward()          # gradient w^2 > 0
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1, rtol=0, atol=1e-15)
