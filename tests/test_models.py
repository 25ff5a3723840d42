import pytest
import torch
from torch import nn

from deepgrad.models import MLP


def test_shapes_and_layer_count():
    model = MLP(64, 10, width=32, depth=4, activation="tanh")
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert model.depth == 4
    layers = model.linear_layers()
    assert [(l.in_features, l.out_features) for l in layers] == [(64, 32)] + [(32, 32)] * 3 + [(32, 10)]


@pytest.mark.parametrize("activation, module", [("sigmoid", nn.Sigmoid), ("relu", nn.ReLU), ("swish", nn.SiLU)])
def test_activation_by_name(activation, module):
    model = MLP(3, 2, depth=2, activation=activation)
    assert all(isinstance(h.activation, module) for h in model.hidden)


def test_equals_an_explicit_sequential():
    model = MLP(4, 2, width=6, depth=2, activation="tanh")
    l1, l2, l3 = model.linear_layers()
    x = torch.randn(7, 4)
    torch.testing.assert_close(model(x), l3(torch.tanh(l2(torch.tanh(l1(x))))))


def test_residual_adds_the_input_after_the_first_layer():
    model = MLP(4, 2, width=6, depth=3, activation="relu", residual=True)
    l1, l2, l3, out = model.linear_layers()
    x = torch.randn(7, 4)
    a1 = torch.relu(l1(x))
    a2 = a1 + torch.relu(l2(a1))
    a3 = a2 + torch.relu(l3(a2))
    torch.testing.assert_close(model(x), out(a3))


def test_init_hook_applies_to_every_linear_layer():
    seen = []
    model = MLP(4, 2, depth=3, init=lambda layer: (seen.append(layer), nn.init.zeros_(layer.weight)))
    assert seen == model.linear_layers()
    assert all(torch.count_nonzero(l.weight) == 0 for l in model.linear_layers())


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm)])
@pytest.mark.parametrize("position", ["before", "after"])
def test_norm_placement(norm, kind, position):
    model = MLP(4, 2, width=6, depth=2, activation="sigmoid", norm=norm, norm_position=position)
    h = model.hidden[0]
    assert isinstance(h.norm, kind)
    x = torch.randn(9, 4)
    z = h.linear(x)
    expected = torch.sigmoid(h.norm(z)) if position == "before" else h.norm(torch.sigmoid(z))
    torch.testing.assert_close(h(x), expected)


class TestBadArguments:
    @pytest.mark.parametrize("arg", ["in_features", "out_features", "width", "depth"])
    def test_zero_sizes(self, arg):
        kwargs = dict(in_features=3, out_features=2, width=4, depth=2) | {arg: 0}
        with pytest.raises(ValueError, match=f"{arg} must be an int >= 1, got 0"):
            MLP(**kwargs)

    def test_non_int_depth(self):
        with pytest.raises(TypeError, match="depth must be an int >= 1, got float 2.0"):
            MLP(3, 2, depth=2.0)

    def test_bool_is_not_a_size(self):
        with pytest.raises(TypeError, match="width must be an int"):
            MLP(3, 2, width=True)

    def test_unknown_activation(self):
        with pytest.raises(ValueError, match="activation must be one of .*'tanh'"):
            MLP(3, 2, activation="tahn")

    def test_unknown_norm(self):
        with pytest.raises(ValueError, match="norm must be one of None, 'batch', 'layer'; got 'group'"):
            MLP(3, 2, norm="group")

    def test_unknown_norm_position(self):
        with pytest.raises(ValueError, match="norm_position must be one of 'before', 'after'"):
            MLP(3, 2, norm="batch", norm_position="pre")

    def test_residual_must_be_bool(self):
        with pytest.raises(TypeError, match="residual must be True or False"):
            MLP(3, 2, residual="yes")

    def test_init_must_be_callable(self):
        with pytest.raises(TypeError, match="init must be None or a callable"):
            MLP(3, 2, init="xavier")


def test_norm_factory_builds_each_hidden_layers_norm():
    from deepgrad.normalization import BatchNorm
    seen = []

    def factory(features):
        seen.append(features)
        return BatchNorm(features)

    model = MLP(4, 2, width=6, depth=3, activation="tanh", norm=factory, norm_position="after")
    assert seen == [6, 6, 6]
    assert all(isinstance(h.norm, BatchNorm) for h in model.hidden)
    h = model.hidden[0]
    x = torch.randn(9, 4)
    torch.testing.assert_close(h(x), h.norm(torch.tanh(h.linear(x))))


def test_norm_factory_must_return_a_module():
    with pytest.raises(TypeError, match="norm, when callable, must return an nn.Module for 4 features, got int"):
        MLP(3, 2, width=4, norm=lambda c: c)
