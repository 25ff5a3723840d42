"""Low precision: formats against torch.finfo, rounding against PyTorch's casts, the float16 simulation
against torch.autocast, the δ collector against autograd, and loss scaling against torch.amp.GradScaler
step for step on runs that overflow on purpose."""

import copy
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepgrad as dg
from deepgrad import precision

DIGITS = dg.data.load_digits()


@pytest.mark.parametrize("dtype, bits", [(torch.float32, (8, 23)), (torch.float16, (5, 10)),
                                         (torch.bfloat16, (8, 7)), (torch.float64, (11, 52))])
def test_limits_from_the_bits_equal_torch_finfo(dtype, bits):
    derived, reported = precision.from_bits(*bits), precision.describe(dtype)
    info = torch.finfo(dtype)
    assert (reported.exponent_bits, reported.mantissa_bits) == bits
    assert derived.bits == reported.bits == info.bits
    assert derived.max == reported.max == info.max
    assert derived.smallest_normal == reported.smallest_normal == info.smallest_normal
    assert derived.eps == reported.eps == info.eps
    assert derived.smallest_subnormal == reported.smallest_subnormal


def test_the_smallest_subnormal_is_the_last_positive_number():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        tiny = precision.smallest_subnormal(dtype)
        t = torch.tensor(tiny, dtype=dtype)
        assert t > 0 and torch.nextafter(torch.zeros((), dtype=dtype), t) == t
        assert torch.tensor(tiny / 2, dtype=torch.float64).to(dtype) == 0  # half of it: a tie, to even (0)
    assert precision.smallest_subnormal(torch.float16) == 2.0 ** -24


def test_float16s_overflow_and_underflow():
    assert precision.describe(torch.float16).max == 65504
    x = torch.tensor([65504.0, 65519.0, 65520.0, 2.0 ** -25, 2.0 ** -25 * 1.01, -1e6])
    assert precision.round_to(x, torch.float16).tolist() == [65504.0, 65504.0, math.inf, 0.0, 2.0 ** -24, -math.inf]


def test_cast_rounds_the_value_and_the_gradient():
    x = torch.tensor([1.0 + 2.0 ** -12, 3.0], requires_grad=True)
    y = precision.cast(x, torch.float16)
    assert y.tolist() == [1.0, 3.0]
    (y * torch.tensor([2.0 ** -26, 1.0 + 2.0 ** -12])).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("bad, error", [(dict(x=[1.0]), TypeError), (dict(dtype=torch.int16), ValueError),
                                        (dict(dtype="float16"), TypeError)])
def test_cast_refuses_bad_arguments(bad, error):
    kwargs = dict(x=torch.ones(2), dtype=torch.float16) | bad
    with pytest.raises(error):
        precision.cast(**kwargs)


def _model(depth=3, seed=0, init="he_normal"):
    return dg.models.mlp_for(DIGITS, depth=depth, width=32, init=init, seed=seed)


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.0), (torch.float16, 1e-3)])
def test_the_simulation_matches_torch_autocast(dtype, tolerance):
    """bfloat16: bit for bit; float16: the gradients differ from autocast's, by less than float16's epsilon."""
    model = _model()
    twin = precision.simulate(copy.deepcopy(model), dtype)
    assert all(isinstance(m, precision.SimulatedLinear) for m in dg.models.MLP.linear_layers(twin))
    x, y = DIGITS.train.x[:64], DIGITS.train.y[:64]
    with torch.autocast("cpu", dtype=dtype):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    F.cross_entropy(twin(x), y).backward()
    assert logits.dtype == dtype
    torch.testing.assert_close(twin(x), logits.float(), rtol=tolerance, atol=tolerance * 1e-1)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert p is not q
        error = float((p.grad - q.grad).norm() / p.grad.norm())
        assert error <= tolerance / 10, error


def test_simulate_keeps_the_parameters_and_float32_is_a_no_op():
    model = _model()
    params = list(model.parameters())
    assert precision.simulate(model, torch.float32) is model
    assert not any(isinstance(m, precision.SimulatedLinear) for m in model.modules())
    precision.simulate(model, torch.float16)
    assert all(p is q for p, q in zip(params, model.parameters(), strict=True))
    assert "simulated=float16" in repr(model)


def test_deltas_equal_autograd_and_leave_the_gradients_alone():
    model = _model()
    x, y = DIGITS.train.x[:16], DIGITS.train.y[:16]
    found = precision.deltas(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    outputs = []
    h = x
    for layer in model.hidden:  # the same pass written out
        z = layer.linear(h)
        outputs.append(z)
        h = layer.activation(z)
    z = model.output(h)
    outputs.append(z)
    expected = torch.autograd.grad(F.cross_entropy(z, y), outputs)
    assert len(found) == len(expected) == 4
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fractions_below_leave_out_zeros():
    values = torch.tensor([0.0, 0.0, 2.0 ** -26, 2.0 ** -20, 1.0, -1e-5])
    below_sub, below_normal = precision.fractions_below(values, torch.float16)
    assert below_sub == 0.25 and below_normal == 0.75
    assert all(math.isnan(v) for v in precision.fractions_below(torch.zeros(3), torch.float16))


# ----------------------------------------------------------------------------------------------
# Loss scaling against torch.amp.GradScaler
# ----------------------------------------------------------------------------------------------

def _batches(n, batch_size=32):
    g = torch.Generator().manual_seed(1)
    return list(itertools.islice(dg.train.cycle(DIGITS.train, batch_size, generator=g), n))


def _parity_run(make_scaler, optimizer_cls, steps, max_grad_norm=None, dtype=torch.float16, **opt):
    model = precision.simulate(_model(seed=3), dtype)
    optimizer = optimizer_cls(model.parameters(), **opt)
    scaler = make_scaler()
    before = []
    scales = []
    for batch in _batches(steps):
        before.append([p.detach().clone() for p in model.parameters()])
        scales += precision.amp_steps(scaler, model, optimizer, [batch], max_grad_norm=max_grad_norm)
    unchanged = [i + 1 for i, old in enumerate(before[1:] + [list(model.parameters())])
                 if all(torch.equal(a, b) for a, b in zip(before[i], old, strict=True))]
    return scales, unchanged, [p.detach() for p in model.parameters()], scaler


@pytest.mark.parametrize("optimizer_cls, opt", [(torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
                                                (torch.optim.Adam, dict(lr=1e-3))])
@pytest.mark.parametrize("factors", [(2.0, 0.5, 4), (3.0, 0.3, 3)])
@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_loss_scaler_equals_grad_scaler_step_for_step(optimizer_cls, opt, factors, max_grad_norm):
    growth, backoff, interval = factors
    settings = dict(init_scale=2.0 ** 24, growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
    ours = _parity_run(lambda: precision.LossScaler(**settings), optimizer_cls, 40, max_grad_norm, **opt)
    theirs = _parity_run(lambda: torch.amp.GradScaler("cpu", **settings), optimizer_cls, 40, max_grad_norm, **opt)
    assert ours[0] == theirs[0]                      # the same scale after every step
    assert ours[1] == theirs[1] == ours[3].skipped   # the same skipped steps
    assert len(ours[1]) >= 3 and ours[1][0] == 1     # it overflowed on purpose, more than once
    assert max(ours[0]) > min(ours[0][len(ours[1]):])  # and grew again between overflows
    for a, b in zip(ours[2], theirs[2], strict=True):
        assert torch.equal(a, b)                     # the same parameters


@pytest.mark.parametrize("make_optimizer", [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                            lambda ps: torch.optim.Adam(ps, lr=1e-3)], ids=["sgd", "adam"])
def test_the_training_loop_with_loss_scaling_equals_the_amp_recipe(make_optimizer):
    """Skipping by dropping the gradients leaves parameters and optimiser state as a skipped step() does."""
    steps = 30
    settings = dict(init_scale=2.0 ** 24, growth_interval=4)
    model = precision.simulate(_model(seed=3), torch.float16)
    twin = copy.deepcopy(model)
    reference = precision.LossScaler(**settings)
    opt = make_optimizer(twin.parameters())
    precision.amp_steps(reference, twin, opt, _batches(steps), max_grad_norm=1.0)
    scaler = precision.LossScaler(**settings)
    history = dg.train.loop(model, _batches(steps), make_optimizer(model.parameters()),
                            step_loss=dg.train.supervised(precision.ScaledLoss(scaler)),
                            callbacks=[precision.LossScaling(scaler, max_grad_norm=1.0)])
    assert scaler.scales == reference.scales and scaler.skipped == reference.skipped
    assert len(scaler.skipped) >= 2
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    # the history records the loss itself, not the scaled loss
    assert history.train_loss[0] < 10


def test_the_history_counts_only_the_updates_grad_scaler_would_apply():
    """Steps that overflow are skipped: History.updates is the steps GradScaler applied, History.skipped
    the rest (a GradScaler step is skipped when it leaves every parameter unchanged)."""
    steps, settings = 30, dict(init_scale=2.0 ** 24, growth_interval=4)
    _, unchanged, _, _ = _parity_run(lambda: torch.amp.GradScaler("cpu", **settings), torch.optim.SGD, steps,
                                     lr=0.05, momentum=0.9)
    model = precision.simulate(_model(seed=3), torch.float16)
    scaler = precision.LossScaler(**settings)
    calls = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    optimizer.register_step_post_hook(lambda *args: calls.append(1))
    history = dg.train.loop(model, _batches(steps), optimizer,
                            step_loss=dg.train.supervised(precision.ScaledLoss(scaler)),
                            callbacks=[precision.LossScaling(scaler)])
    assert len(unchanged) >= 3 and scaler.skipped == unchanged   # it overflowed on purpose
    assert history.skipped == len(unchanged) and history.updates == steps - len(unchanged) == len(calls)
    assert history.steps == steps


def test_the_scale_is_created_lazily_by_grad_scaler_but_reads_the_same():
    theirs = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert theirs._scale is None and theirs.get_scale() == 1024.0
    theirs.scale(torch.ones(()))
    assert theirs._scale is not None and theirs.get_scale() == precision.LossScaler(1024.0).get_scale()


def test_static_scaling_keeps_its_scale_and_still_skips_overflowing_steps():
    scales, unchanged, _, scaler = _parity_run(lambda: precision.LossScaler(2.0 ** 24, dynamic=False),
                                               torch.optim.SGD, 5, lr=0.1)
    assert scales == [2.0 ** 24] * 5 and unchanged == scaler.skipped == [1, 2, 3, 4, 5]


def test_the_scale_collapses_to_zero_when_the_loss_is_nan():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = precision.LossScaler(2.0 ** 16)
    x = torch.tensor([[math.nan, 1.0]])
    batches = [(x, torch.zeros(1, 1))] * 200
    ours = precision.amp_steps(scaler, model, opt, batches, loss_fn=F.mse_loss)
    theirs = precision.amp_steps(torch.amp.GradScaler("cpu"), model, opt, batches, loss_fn=F.mse_loss)
    assert ours == theirs and scaler.get_scale() == 0.0 and len(scaler.skipped) == 200
    assert ours.index(0.0) == 16 + 149  # 2^16 halved to 2^-149, float32's smallest subnormal, then to 0


def test_scaled_loss_has_the_value_of_the_loss_and_the_gradient_of_the_scaled_loss():
    scaler = precision.LossScaler(2.0 ** 10)
    w = torch.tensor([0.3, -0.7], requires_grad=True)
    loss = precision.ScaledLoss(scaler, lambda out, y: ((out - y) ** 2).sum())(w * 3, torch.ones(2))
    assert loss.detach().item() == ((w * 3 - 1) ** 2).sum().detach().item()
    loss.backward()
    expected = torch.autograd.grad(scaler.scale(((w * 3 - 1) ** 2).sum()), w)[0]
    assert torch.equal(w.grad, expected)


@pytest.mark.parametrize("kwargs, error", [
    (dict(init_scale=0.0), ValueError), (dict(init_scale="big"), TypeError),
    (dict(growth_factor=1.0), ValueError), (dict(backoff_factor=1.5), ValueError),
    (dict(growth_interval=0), ValueError), (dict(dynamic=1), TypeError)])
def test_loss_scaler_refuses_bad_arguments(kwargs, error):
    with pytest.raises(error):
        precision.LossScaler(**kwargs)


def test_update_before_unscale_is_an_error():
    scaler = precision.LossScaler()
    with pytest.raises(RuntimeError):
        scaler.update()


@pytest.mark.parametrize("scaler", [precision.LossScaler(), torch.amp.GradScaler("cpu")],
                         ids=["ours", "GradScaler"])
def test_unscaling_twice_in_one_step_is_an_error_as_in_grad_scaler(scaler):
    model = _model(depth=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = DIGITS.train.x[:8], DIGITS.train.y[:8]
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called on this optimizer"):
        scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    scaler.unscale_(optimizer)   # allowed again after update()


@pytest.mark.parametrize("args, error", [((1, 10), ValueError), ((5, 0), ValueError),
                                         ((5.0, 10), TypeError), ((5, "10"), TypeError)])
def test_from_bits_refuses_bad_arguments(args, error):
    with pytest.raises(error):
        precision.from_bits(*args)


def test_round_to_flushes_half_the_smallest_subnormal_to_zero():
    tiny = 2.0 ** -24
    values = torch.tensor([tiny / 2, tiny / 2 * (1 + 2 ** -10), tiny * 0.75, tiny * 1.5], dtype=torch.float64)
    assert precision.round_to(values, torch.float16).tolist() == [0.0, tiny, tiny, 2 * tiny]


@pytest.mark.parametrize("loss_scale, error", [(0.0, ValueError), (-1.0, ValueError), ("2", TypeError)])
def test_gradient_error_refuses_a_bad_loss_scale(loss_scale, error):
    with pytest.raises(error, match="loss_scale"):
        precision.gradient_error(0, dtype=torch.float16, loss_scale=loss_scale)


def test_train_loss_factor_is_exact_in_float32_and_flushes_float16():
    kwargs = dict(depth=2, width=16, steps=20, init="he_normal", lr=0.05)
    plain = precision.train(0, **kwargs)
    scaled = precision.train(0, loss_factor=2.0 ** -20, **kwargs)
    assert plain == scaled
    start = precision.train(0, dtype=torch.float16, loss_factor=2.0 ** -20, result="run", **kwargs)
    fresh = dg.models.mlp_for(DIGITS, depth=2, width=16, init="he_normal", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(start.model.parameters(), fresh.parameters(), strict=True))
    start = start.history  # not a single parameter moved
    rescued = precision.train(0, dtype=torch.float16, loss_factor=2.0 ** -20, scaling="dynamic", **kwargs)
    assert rescued < start.val_loss[-1] / 2.0 ** -20 - 0.1
    with pytest.raises(ValueError):
        precision.train(0, scaling="static")


def test_gradient_error_is_zero_in_float32_and_larger_in_bfloat16_than_in_float16():
    assert precision.gradient_error(0, dtype=torch.float32) == 0.0
    half = precision.gradient_error(0, dtype=torch.float16)
    brain = precision.gradient_error(0, dtype=torch.bfloat16)
    assert 0 < half < 0.05 and brain > 2 * half


def _scheduled_run(updates_only):
    """Loss scaling whose first step overflows, and a learning-rate scheduler stepped through OnStep."""
    model = precision.simulate(_model(seed=3), torch.float16)
    scaler = precision.LossScaler(init_scale=2.0 ** 24, growth_interval=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = dg.train.loop(model, _batches(6), optimizer,
                                step_loss=dg.train.supervised(precision.ScaledLoss(scaler)),
                                callbacks=[precision.LossScaling(scaler),
                                           dg.train.OnStep(lambda run: scheduler.step(), updates_only=updates_only)])
    assert scaler.skipped[0] == 1  # the first step made no update
    return history, scheduler, [str(w.message) for w in caught]


def test_on_step_can_step_a_scheduler_only_after_applied_updates():
    history, scheduler, caught = _scheduled_run(updates_only=True)
    assert not caught, caught
    assert scheduler.last_epoch == history.updates < history.steps  # it counted updates, not steps
    history, scheduler, caught = _scheduled_run(updates_only=False)  # every step: PyTorch's warning
    assert any("lr_scheduler.step()` before `optimizer.step()" in message for message in caught), caught
    assert scheduler.last_epoch == history.steps
    with pytest.raises(TypeError, match="updates_only"):
        dg.train.OnStep(print, updates_only=1)
