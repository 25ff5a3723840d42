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


# --- mlp_for: an MLP sized for a data set, seeded locally ---------------------------------------

def _spirals(**kwargs):
    from deepgrad.data import spirals
    return spirals(20, classes=3, **kwargs)


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_mlp_for_takes_its_sizes_dtype_and_device_from_the_data():
    from deepgrad.models import mlp_for
    data = _spirals(dtype=torch.float64)
    model = mlp_for(data, depth=2, width=5, activation="tanh", seed=0)
    first, last = model.linear_layers()[0], model.linear_layers()[-1]
    assert (first.in_features, last.out_features) == (2, 3)
    assert model.depth == 2 and first.out_features == 5 and model.activation_name == "tanh"
    assert first.weight.dtype == torch.float64 and first.weight.device == data.train.x.device
    assert model(data.train.x).shape == (len(data.train), 3)
    assert mlp_for(data, depth=1, seed=0, dtype=torch.float32).output.weight.dtype == torch.float32


def test_mlp_for_seed_draws_as_manual_seed_and_leaves_the_global_rng_alone():
    from deepgrad.models import mlp_for
    data = _spirals()
    torch.manual_seed(7)
    reference = MLP(2, 3, width=6, depth=3, activation="relu")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model = mlp_for(data, depth=3, width=6, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert _same_weights(model, reference)
    assert _same_weights(mlp_for(data, depth=3, width=6, seed=7), model)
    assert not _same_weights(mlp_for(data, depth=3, width=6, seed=8), model)


def test_mlp_for_without_a_seed_draws_from_the_global_rng_like_mlp():
    from deepgrad.models import mlp_for
    data = _spirals()
    torch.manual_seed(3)
    reference = MLP(2, 3, width=6, depth=2)
    after_reference = torch.get_rng_state()
    torch.manual_seed(3)
    model = mlp_for(data, depth=2, width=6)
    assert _same_weights(model, reference)
    assert torch.equal(torch.get_rng_state(), after_reference)


def test_mlp_for_generator_supplies_the_draws_and_is_advanced():
    from deepgrad.models import mlp_for
    data = _spirals()
    generator = torch.Generator().manual_seed(5)
    before = torch.get_rng_state()
    first = mlp_for(data, depth=2, width=4, seed=generator)
    second = mlp_for(data, depth=2, width=4, seed=generator)
    assert torch.equal(torch.get_rng_state(), before)
    assert _same_weights(first, mlp_for(data, depth=2, width=4, seed=5))
    assert not _same_weights(first, second)  # the generator moved on


def test_mlp_for_applies_an_init_scheme_by_name_or_callable():
    from deepgrad import init
    from deepgrad.models import mlp_for
    data = _spirals()
    by_name = mlp_for(data, depth=2, width=4, init="zeros", seed=0)
    assert all(torch.count_nonzero(p) == 0 for p in by_name.parameters())
    by_callable = mlp_for(data, depth=2, width=4, init=init.for_linear("constant", value=0.5), seed=0)
    assert all(torch.all(layer.weight == 0.5) for layer in by_callable.linear_layers())
    torch.manual_seed(1)
    he = MLP(2, 3, width=4, depth=2, init=init.for_linear("he_normal"))
    assert _same_weights(mlp_for(data, depth=2, width=4, init="he_normal", seed=1), he)


def test_mlp_for_passes_the_other_knobs_to_mlp():
    from deepgrad.models import mlp_for
    model = mlp_for(_spirals(), depth=3, width=4, norm="layer", residual=True, bias=False, seed=0)
    assert all(isinstance(h.norm, nn.LayerNorm) for h in model.hidden)
    assert [h.residual for h in model.hidden] == [False, True, True]
    assert model.output.bias is None


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(data=torch.zeros(3, 2)), TypeError, "data must be a deepgrad.data.Dataset"),
    (dict(init=3), TypeError, "init must be None, a scheme name"),
    (dict(init="kaiming"), ValueError, "scheme must be one of"),
    (dict(seed=1.5), TypeError, "seed must be None, a non-negative int or a torch.Generator"),
    (dict(seed=True), TypeError, "seed must be None"),
    (dict(seed=-1), ValueError, "seed must be a non-negative int"),
    (dict(dtype="float64"), TypeError, "dtype must be None or a floating-point torch.dtype"),
    (dict(dtype=torch.int64), ValueError, "dtype must be a floating-point torch.dtype"),
    (dict(depth=0), ValueError, "depth"),
    (dict(activation="sigmoidal"), ValueError, "activation"),
])
def test_mlp_for_rejects_bad_arguments_by_name(kwargs, error, message):
    from deepgrad.models import mlp_for
    arguments = dict(data=_spirals(), depth=2, seed=0) | kwargs
    data = arguments.pop("data")
    before = torch.get_rng_state()
    with pytest.raises(error, match=message):
        mlp_for(data, **arguments)
    assert torch.equal(torch.get_rng_state(), before)
