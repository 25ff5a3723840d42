import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepgrad as dg
from deepgrad import autodiff, diagnostics


def _setup(depth=6, activation="sigmoid"):
    model = dg.models.MLP(5, 3, width=8, depth=depth, activation=activation).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def test_probe_agrees_with_the_hand_written_backward_pass():
    model, x, y = _setup()
    stats = diagnostics.probe(model, x, y)
    net = autodiff.Network.from_mlp(model)
    fp = autodiff.forward(net, x)
    _, grads = autodiff.backprop(net, x, y)
    assert [s.name for s in stats] == [f"hidden.{i}.linear" for i in range(6)] + ["output"]
    assert [s.weight_grad_norm for s in stats] == pytest.approx(grads.weight_norms(), rel=1e-10)
    assert [s.output_grad_norm for s in stats] == pytest.approx(
        [d.norm().item() for d in grads.deltas], rel=1e-10)
    assert [s.output_mean for s in stats] == pytest.approx([z.mean().item() for z in fp.pre_activations])
    assert [s.output_std for s in stats] == pytest.approx([z.std().item() for z in fp.pre_activations])
    assert [s.weight_norm for s in stats] == pytest.approx([w.norm().item() for w in net.weights])


def test_probe_leaves_parameters_unchanged_and_hooks_removed():
    model, x, y = _setup()
    before = [p.clone() for p in model.parameters()]
    diagnostics.probe(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(not m._forward_hooks for m in model.modules())


def test_recorder_works_on_any_module_and_predicate():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(10, 4)
    with diagnostics.Recorder(model, nn.Tanh) as rec:
        model(x).sum().backward()
    (record,) = rec.records.values()
    assert record.name == "1" and record.calls == 1
    h = torch.tanh(model[0](x))
    assert record.output_mean == pytest.approx(h.mean().item(), rel=1e-5)
    with diagnostics.Recorder(model, lambda name, m: name == "2") as rec:
        model(x).sum().backward()
    assert list(rec.records) == ["2"]
    assert rec.records["2"].output_grad_norm == pytest.approx(math.sqrt(20))  # ∂(sum)/∂output = ones(10, 2)


def test_weight_gradient_norms_before_backward_are_nan():
    model, _, _ = _setup(depth=1)
    assert all(math.isnan(v) for v in diagnostics.weight_gradient_norms(model).values())


def test_non_finite_values_are_recorded_not_raised():
    model, x, y = _setup(depth=2, activation="relu")
    with torch.no_grad():
        model.linear_layers()[0].weight.fill_(float("inf"))
    stats = diagnostics.probe(model, x, y)
    assert not math.isfinite(stats[0].output_mean)
    assert any(not math.isfinite(s.weight_grad_norm) for s in stats)


def test_norms_are_frobenius():
    model, x, y = _setup(depth=2)
    diagnostics.probe(model, x, y)
    first = model.linear_layers()[0]
    assert diagnostics.weight_gradient_norms(model)["hidden.0.linear"] == pytest.approx(
        first.weight.grad.pow(2).sum().sqrt().item())


def test_custom_loss():
    model, x, _ = _setup(depth=2)
    target = torch.randn(20, 3, dtype=torch.float64)
    stats = diagnostics.probe(model, x, target, loss_fn=F.mse_loss)
    _, grads = autodiff.backprop(autodiff.Network.from_mlp(model), x, target, loss="mse")
    assert [s.weight_grad_norm for s in stats] == pytest.approx(grads.weight_norms(), rel=1e-10)


class TestBadArguments:
    def test_model_must_be_a_module(self):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
            diagnostics.Recorder([nn.Linear(2, 2)])

    def test_select_must_be_type_or_predicate(self):
        with pytest.raises(TypeError, match="select must be a module type"):
            diagnostics.Recorder(nn.Linear(2, 2), select="Linear")


class _RegisteredBackwards(nn.Module):
    """Registers its layers output-side first, runs them input-side first."""

    def __init__(self):
        super().__init__()
        self.last = nn.Linear(6, 3)
        self.unused = nn.Linear(3, 3)
        self.first = nn.Linear(5, 6)

    def forward(self, x):
        return self.last(torch.tanh(self.first(x)))


def test_probe_orders_layers_by_the_forward_pass_not_by_registration():
    model = _RegisteredBackwards()
    stats = diagnostics.probe(model, torch.randn(8, 5), torch.randint(0, 3, (8,)))
    assert [s.name for s in stats] == ["first", "last", "unused"]
    assert math.isnan(stats[-1].weight_grad_norm) and math.isnan(stats[-1].output_mean)
