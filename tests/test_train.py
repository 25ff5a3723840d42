"""The training loop: it learns, it is deterministic, it reports divergence instead of crashing."""

import math

import pytest
import torch
import torch.nn.functional as F

import deepgrad as dg
from deepgrad.train import evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return dg.data.load_digits()


def _run(digits, lr=0.1, steps=60, seed=0):
    generator = dg.seed_everything(seed)
    model = dg.models.MLP(64, 10, width=32, depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return model, fit(model, digits, opt, steps=steps, batch_size=32, eval_every=20, generator=generator)


def test_fit_learns_and_records(digits):
    model, h = _run(digits)
    assert h.steps == 60 and len(h.train_loss) == 60 and not h.diverged
    assert h.eval_steps == [0, 20, 40, 60]
    assert h.val_loss[-1] < h.val_loss[0] - 0.5
    assert h.val_accuracy[-1] > h.val_accuracy[0] + 0.4
    assert (h.val_loss[-1], h.val_accuracy[-1]) == evaluate(model, digits.val)


def test_fit_is_deterministic(digits):
    assert _run(digits)[1] == _run(digits)[1]


def test_divergence_is_reported_not_raised(digits):
    _, h = _run(digits, lr=1e6, steps=200)
    assert h.diverged and h.diverged_at <= 200
    assert not math.isfinite(h.train_loss[-1])
    assert h.steps == h.diverged_at - 1
    assert all(math.isfinite(v) for v in h.train_loss[:-1])


def test_on_step_and_clipping(digits):
    seen = []
    model = dg.models.MLP(64, 10, width=16, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, digits, opt, steps=5, batch_size=16, max_grad_norm=1e-9,
        on_step=lambda step, loss: seen.append(step))
    assert seen == [1, 2, 3, 4, 5]


def test_evaluate_restores_mode(digits):
    model = dg.models.MLP(64, 10, width=8, depth=1, norm="batch")
    model.train()
    loss, acc = evaluate(model, digits.val, F.cross_entropy)
    assert model.training and 0 <= acc <= 1 and loss > 0
    model.eval()
    evaluate(model, digits.val)
    assert not model.training


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=5, batch_size=0), "batch_size"),
    (dict(steps=5, batch_size=10_000), "batch_size"),
    (dict(steps=5, eval_every=0), "eval_every"),
    (dict(steps=5, max_grad_norm=-1.0), "max_grad_norm"),
])
def test_bad_arguments_are_named(digits, kwargs, match):
    model = dg.models.MLP(64, 10, width=8, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        fit(model, digits, opt, **kwargs)
