"""Clipping from scratch against torch.nn.utils, Pascanu's one-unit network against autograd,
truncated BPTT against a step-by-step implementation, and the warm-up schedule against torch's."""

import math

import pytest
import torch
from torch import nn

import deepgrad as dg
from deepgrad import clipping

EXACT = dict(rtol=0, atol=0, equal_nan=True)


def _model_with_grads(seed=0, scale=1.0):
    """A small network with random gradients of several shapes; one parameter has no grad."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    for p in model.parameters():
        p.grad = scale * torch.randn_like(p)
    model[2].bias.grad = None
    return model


def _twin(model):
    twin = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    twin.load_state_dict(model.state_dict())
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()
    return twin


def _grads(model):
    return [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
def test_total_norm_is_the_norm_of_the_concatenated_vector(norm_type):
    grads = _grads(_model_with_grads())
    flat = torch.cat([g.reshape(-1) for g in grads])
    expected = torch.linalg.vector_norm(flat, norm_type)
    torch.testing.assert_close(clipping.total_norm(grads, norm_type), expected)
    assert clipping.total_norm([]) == 0


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.0, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    mine, theirs = _model_with_grads(), None
    theirs = _twin(mine)
    clipping.clip_grad_value_(mine.parameters(), clip_value)
    nn.utils.clip_grad_value_(theirs.parameters(), clip_value)
    for a, b in zip(_grads(mine), _grads(theirs), strict=True):
        torch.testing.assert_close(a, b, **EXACT)
        assert a.abs().max() <= clip_value


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 3.0, 1e3])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    mine = _model_with_grads()
    theirs = _twin(mine)
    before = [g.clone() for g in _grads(mine)]
    n_mine = clipping.clip_grad_norm_(mine.parameters(), max_norm, norm_type)
    n_theirs = nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, norm_type)
    torch.testing.assert_close(n_mine, n_theirs)
    for a, b in zip(_grads(mine), _grads(theirs), strict=True):
        torch.testing.assert_close(a, b)
    after = clipping.total_norm(_grads(mine), norm_type)
    assert after <= max_norm * (1 + 1e-6) or torch.allclose(after, n_mine)
    # the direction never changes
    assert clipping.cosine(before, _grads(mine)) == pytest.approx(1.0, abs=1e-6)


def test_clip_grad_norm_on_a_single_tensor():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    q = p.detach().clone().requires_grad_()
    q.grad = p.grad.clone()
    assert clipping.clip_grad_norm_(p, 1.0) == nn.utils.clip_grad_norm_(q, 1.0) == 5.0
    torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_gradients_behave_like_torch(bad):
    mine = _model_with_grads()
    mine[0].weight.grad[1, 2] = bad
    theirs = _twin(mine)
    n_mine = clipping.clip_grad_norm_(mine.parameters(), 1.0)
    n_theirs = nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    torch.testing.assert_close(n_mine, n_theirs, **EXACT)
    assert not torch.isfinite(n_mine)
    for a, b in zip(_grads(mine), _grads(theirs), strict=True):
        torch.testing.assert_close(a, b, **EXACT)
    if math.isnan(bad):  # a NaN norm poisons every component
        assert all(g.isnan().all() for g in _grads(mine))
    else:                # an infinite norm zeroes the finite ones, the infinite one becomes NaN
        assert mine[0].weight.grad.isnan().sum() == 1
        assert all((g == 0).all() for g in _grads(mine)[1:])
    # clipping by value keeps NaN and clamps infinities, like torch
    mine, theirs = _model_with_grads(), None
    mine[0].weight.grad[1, 2] = bad
    theirs = _twin(mine)
    clipping.clip_grad_value_(mine.parameters(), 0.5)
    nn.utils.clip_grad_value_(theirs.parameters(), 0.5)
    for a, b in zip(_grads(mine), _grads(theirs), strict=True):
        torch.testing.assert_close(a, b, **EXACT)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_error_if_nonfinite_raises_like_torch(bad):
    mine = _model_with_grads()
    mine[0].bias.grad[0] = bad
    theirs = _twin(mine)
    with pytest.raises(RuntimeError, match="non-finite"):
        clipping.clip_grad_norm_(mine.parameters(), 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(theirs.parameters(), 1.0, error_if_nonfinite=True)
    # nothing was changed before raising, as in torch
    for a, b in zip(_grads(mine), _grads(theirs), strict=True):
        torch.testing.assert_close(a, b, **EXACT)


def test_value_clipping_turns_the_gradient_norm_clipping_does_not():
    g = [torch.tensor([3.0, 0.5])]
    by_value = clipping.clipped_by_value(g, 1.0)
    by_norm, norm = clipping.clipped_by_norm(g, 1.0)
    torch.testing.assert_close(by_value[0], torch.tensor([1.0, 0.5]))
    # cos = (3·1 + 0.5·0.5) / (|(3, 0.5)| |(1, 0.5)|): turned by about 17 degrees
    assert clipping.cosine(g, by_value) == pytest.approx(3.25 / math.sqrt(9.25 * 1.25))
    assert clipping.cosine(g, by_value) < 0.96
    assert clipping.cosine(g, by_norm) == pytest.approx(1.0)
    assert by_norm[0].norm() == pytest.approx(1.0, rel=1e-5) and norm == pytest.approx(math.hypot(3, 0.5))


def test_clipping_never_enlarges_a_gradient():
    grads = _grads(_model_with_grads(scale=1e-3))
    for new in (clipping.clipped_by_value(grads, 0.1), clipping.clipped_by_norm(grads, 0.1)[0]):
        for a, b in zip(new, grads, strict=True):
            assert (a.abs() <= b.abs()).all()
    # an infinite threshold changes nothing, as in torch
    for new in (clipping.clipped_by_value(grads, math.inf), clipping.clipped_by_norm(grads, math.inf)[0]):
        for a, b in zip(new, grads, strict=True):
            torch.testing.assert_close(a, b, **EXACT)
    # a small gradient passes norm clipping unchanged up to the 1e-6 guard
    small, _ = clipping.clipped_by_norm(grads, 10.0)
    for a, b in zip(small, grads, strict=True):
        torch.testing.assert_close(a, b)


def test_argument_checks():
    g = [torch.ones(2)]
    with pytest.raises(ValueError, match="clip_value"):
        clipping.clipped_by_value(g, -1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clipping.clipped_by_norm(g, -1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clipping.clipped_by_norm(g, math.nan)
    with pytest.raises(ValueError, match="norm_type"):
        clipping.total_norm(g, 0)
    with pytest.raises(ValueError, match="same number"):
        clipping.cosine([torch.ones(2)], [torch.ones(3)])


def test_one_unit_loss_is_pascanus_recurrence():
    w, b = 5.0, -2.6
    x = 0.5
    for _ in range(50):
        x = w / (1 + math.exp(-x)) + b
    expected = (1 / (1 + math.exp(-x)) - 0.7) ** 2
    got = clipping.one_unit_loss(torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_one_unit_gradient_by_hand_matches_autograd():
    torch.manual_seed(0)
    w = (torch.rand(200, dtype=torch.float64) * 10 - 2).requires_grad_()
    b = (torch.rand(200, dtype=torch.float64) * 10 - 7).requires_grad_()
    loss = clipping.one_unit_loss(w, b, steps=30)
    gw, gb = torch.autograd.grad(loss.sum(), (w, b))
    mine_loss, mine_w, mine_b = clipping.one_unit_gradient(w.detach(), b.detach(), steps=30)
    torch.testing.assert_close(mine_loss, loss.detach())
    torch.testing.assert_close(mine_w, gw, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mine_b, gb, rtol=1e-9, atol=1e-12)
    # and autograd against finite differences, away from the cliff
    point = (torch.tensor(2.0, dtype=torch.float64, requires_grad=True),
             torch.tensor(-1.0, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda w, b: clipping.one_unit_loss(w, b), point)


def test_delayed_recall_targets_are_the_inputs_lag_steps_earlier():
    g = torch.Generator().manual_seed(0)
    u, y = clipping.delayed_recall(4, 12, 3, generator=g)
    assert u.shape == y.shape == (4, 12, 1)
    torch.testing.assert_close(y[:, 3:], u[:, :-3])
    assert (y[:, :3] == 0).all()
    with pytest.raises(ValueError, match="lag"):
        clipping.delayed_recall(4, 12, 12)
    # predicting zero scores about one, the variance of u
    u, y = clipping.delayed_recall(512, 50, 5, generator=g)
    assert clipping.recall_loss(torch.zeros_like(y), y, 5).item() == pytest.approx(1.0, abs=0.03)


def _step_by_step(model, u, truncate):
    """The same network with nn.RNNCell, one step at a time, cutting the graph every `truncate` steps."""
    cell = nn.RNNCell(1, model.rnn.hidden_size)
    cell.weight_ih, cell.weight_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
    cell.bias_ih, cell.bias_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
    h = torch.zeros(u.shape[0], model.rnn.hidden_size, dtype=u.dtype)
    outs = []
    for t in range(u.shape[1]):
        if truncate is not None and t % truncate == 0:
            h = h.detach()
        h = cell(u[:, t], h)
        outs.append(h)
    return model.readout(torch.stack(outs, dim=1))


@pytest.mark.parametrize("truncate", [None, 1, 4, 7, 20])
def test_truncated_bptt_matches_a_step_by_step_network(truncate):
    model = clipping.TanhRNN(8, gain=1.5).double()
    u, y = clipping.delayed_recall(3, 20, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mine = torch.autograd.grad(clipping.recall_loss(model(u, truncate), y, 2), list(model.parameters()))
    ref_out = _step_by_step(model, u, truncate)
    theirs = torch.autograd.grad(clipping.recall_loss(ref_out, y, 2), list(model.parameters()))
    torch.testing.assert_close(model(u, truncate), ref_out)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b)
    full = torch.autograd.grad(clipping.recall_loss(model(u), y, 2), list(model.parameters()))
    if truncate is None or truncate >= 20:
        for a, b in zip(mine, full, strict=True):
            torch.testing.assert_close(a, b)
    else:  # a cut changes the recurrent gradient
        assert not torch.allclose(mine[1], full[1])


def test_tanh_rnn_initial_recurrent_matrix_has_all_singular_values_equal_to_gain():
    model = clipping.TanhRNN(16, gain=1.7)
    s = torch.linalg.svdvals(model.recurrent_weight.detach())
    torch.testing.assert_close(s, torch.full_like(s, 1.7))


def test_warmup_cosine_matches_torch_schedulers():
    warmup, total, lr = 5, 23, 0.4
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)], milestones=[warmup])
    for step in range(total + 1):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr * clipping.warmup_cosine(step, warmup=warmup,
                                                                                          total=total), abs=1e-12)
        opt.step()
        sched.step()
    assert clipping.warmup_cosine(total, warmup=warmup, total=total) == 0
    with pytest.raises(ValueError, match="total"):
        clipping.warmup_cosine(0, warmup=5, total=5)


def _recall_run(**kw):
    g = dg.seed_everything(0)
    model = clipping.TanhRNN(16)
    return clipping.train_recall(model, steps=40, lr=kw.pop("lr", 0.1), length=20, generator=g, **kw)


def test_train_recall_learns_and_is_deterministic():
    h = _recall_run()
    assert not h.diverged and len(h.loss) == len(h.grad_norm) == 40
    assert sum(h.loss[-5:]) / 5 < 0.9 * h.loss[0]
    assert _recall_run().loss == h.loss


def test_train_recall_reports_divergence_and_clipping_prevents_it():
    h = _recall_run(lr=5.0)
    assert h.diverged and h.diverged_at == len(h.loss) and not math.isfinite(h.loss[-1])
    clipped = _recall_run(lr=5.0, clip="norm", threshold=0.5)
    assert not clipped.diverged
    by_value = _recall_run(lr=5.0, clip="value", threshold=0.01)
    assert not by_value.diverged
    with pytest.raises(ValueError, match="threshold"):
        _recall_run(clip="norm")
    with pytest.raises(ValueError, match="clip"):
        _recall_run(clip="sideways", threshold=1.0)


def test_train_recall_clips_with_the_library_function(monkeypatch):
    calls = []
    real = clipping.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(clipping, "clip_grad_norm_", spy)
    _recall_run(clip="norm", threshold=0.7)
    assert calls == [0.7] * 40


def test_clipping_follows_the_one_rule_for_bad_arguments():
    g = [torch.ones(2)]
    with pytest.raises(TypeError, match="max_norm"):
        clipping.clipped_by_norm(g, "1")
    with pytest.raises(TypeError, match="norm_type"):
        clipping.total_norm(g, "2")
    assert clipping.total_norm(g, math.inf).item() == 1.0
    assert clipping.clipped_by_norm(g, math.inf)[0][0].tolist() == [1.0, 1.0]   # inf: no clipping
    with pytest.raises(TypeError, match="lr"):
        _recall_run(lr="0.1")
    with pytest.raises(ValueError, match="lr"):
        _recall_run(lr=math.inf)
