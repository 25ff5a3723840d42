"""Model builders with the knobs the book turns: depth, width, activation, init, norm, residual.

:class:`MLP` is the network of most chapters: ``depth`` hidden layers of ``width`` units, each
``Linear → [norm] → activation`` (or ``Linear → activation → [norm]``), then a linear output layer.
With ``residual=True`` every hidden layer after the first adds its input to its output
(a^l = a^{l-1} + f(z^l)), the skip connection of He et al. (2016). (He et al.'s two-layer blocks with
batch norm are :class:`deepgrad.residual.ResidualMLP`, a different network.)

:func:`mlp_for` builds an :class:`MLP` for a data set: sizes, device and dtype from the data, the
weights drawn from a local seed (the global random state is left alone), an initialisation by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from deepgrad import activations
from deepgrad import init as initialisation
from deepgrad._checks import one_of, positive_int
from deepgrad.data import Dataset

#: Normalisation layers :class:`MLP` can insert (``None`` for none).
NORMS = (None, "batch", "layer")
#: Where the normalisation goes relative to the nonlinearity.
NORM_POSITIONS = ("before", "after")

Initializer = Callable[[nn.Linear], None]
#: A callable ``features -> nn.Module`` building a hidden layer's normalisation (any custom layer).
NormFactory = Callable[[int], nn.Module]


class HiddenLayer(nn.Module):
    """One hidden layer: ``Linear → [norm] → activation``, optionally with a skip connection."""

    def __init__(self, in_features: int, out_features: int, activation: str, *, bias: bool = True,
                 norm: str | NormFactory | None = None, norm_position: str = "before",
                 residual: bool = False):
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError(f"residual needs in_features == out_features, got {in_features} and {out_features}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm = _make_norm(norm, out_features)
        self.norm_position = norm_position
        self.activation = activations.get(activation).module()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        if self.norm_position == "before":
            out = self.activation(self.norm(z))
        else:
            out = self.norm(self.activation(z))
        return x + out if self.residual else out


def _make_norm(norm: str | NormFactory | None, features: int) -> nn.Module:
    if callable(norm):
        module = norm(features)
        if not isinstance(module, nn.Module):
            raise TypeError(f"norm, when callable, must return an nn.Module for {features} features, "
                            f"got {type(module).__name__}")
        return module
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm1d(features)
    return nn.LayerNorm(features)


class MLP(nn.Module):
    """A multilayer perceptron: ``depth`` hidden layers of ``width`` units and a linear output.

    Parameters
    ----------
    in_features, out_features:
        Sizes of the input and of the output (the logits, for classification).
    width:
        Units in every hidden layer.
    depth:
        Number of hidden layers (>= 1). The network has ``depth + 1`` linear layers.
    activation:
        Name of the hidden nonlinearity, one of :data:`deepgrad.activations.NAMES`.
    init:
        ``None`` keeps PyTorch's default initialisation of ``nn.Linear`` (uniform, variance
        1/(3·fan_in) for the weights); otherwise a callable applied to every ``nn.Linear``
        in order, e.g. ``lambda layer: nn.init.xavier_normal_(layer.weight)``.
    bias:
        Whether the linear layers have biases.
    norm:
        ``None``, ``"batch"`` (``nn.BatchNorm1d``) or ``"layer"`` (``nn.LayerNorm``) in every hidden layer,
        or a callable ``features -> nn.Module`` that builds each hidden layer's normalisation (e.g.
        ``deepgrad.normalization.BatchNorm`` or ``lambda c: NoisyBatchNorm(c, generator=g)``).
    norm_position:
        ``"before"`` the nonlinearity (as in Ioffe & Szegedy, 2015) or ``"after"`` it.
    residual:
        Add a skip connection around every hidden layer except the first (whose input size differs).
    """

    def __init__(self, in_features: int, out_features: int, *, width: int = 64, depth: int = 3,
                 activation: str = "relu", init: Initializer | None = None, bias: bool = True,
                 norm: str | NormFactory | None = None, norm_position: str = "before",
                 residual: bool = False):
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        positive_int("width", width)
        positive_int("depth", depth)
        self.activation_name = activations.get(activation).name
        if not callable(norm):
            one_of("norm", norm, NORMS)
        one_of("norm_position", norm_position, NORM_POSITIONS)
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be True or False, got {residual!r}")
        if init is not None and not callable(init):
            raise TypeError(f"init must be None or a callable taking an nn.Linear, got {init!r}")
        self.norm = norm
        self.residual = residual
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(
            HiddenLayer(sizes[i], sizes[i + 1], activation, bias=bias, norm=norm,
                        norm_position=norm_position, residual=residual and i > 0)
            for i in range(depth)
        )
        self.output = nn.Linear(width, out_features, bias=bias)
        if init is not None:
            for layer in self.linear_layers():
                init(layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = layer(x)
        return self.output(x)

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.hidden)

    def linear_layers(self) -> list[nn.Linear]:
        """The ``depth + 1`` linear layers, from the input side to the output."""
        return [layer.linear for layer in self.hidden] + [self.output]


# ----------------------------------------------------------------------------------------------
# An MLP sized for a data set, seeded locally
# ----------------------------------------------------------------------------------------------


def mlp_for(data: Dataset, *, depth: int, width: int = 64, activation: str = "relu",
            init: str | Initializer | None = None, seed: int | torch.Generator | None = None,
            device: torch.device | str | None = None, dtype: torch.dtype | None = None,
            **knobs: Any) -> MLP:
    """An :class:`MLP` for ``data`` (a :class:`deepgrad.data.Dataset`): ``data.n_features`` in, ``data.n_classes`` out.

    Parameters
    ----------
    data:
        The data set the network will read; it fixes the input and output sizes, and by default the
        device and floating-point type (those of ``data.train.x``).
    depth, width, activation:
        As for :class:`MLP`.
    init:
        ``None`` keeps PyTorch's default initialisation; a scheme name of :data:`deepgrad.init.SCHEMES`
        (``"he_normal"``, ``"xavier_uniform"``, ...) applies ``deepgrad.init.for_linear(init)`` to every
        linear layer (weights from the scheme, biases zero); a callable ``nn.Linear -> None`` is applied
        as it is (e.g. ``deepgrad.init.for_linear("constant", value=0.1)``).
    seed:
        ``None`` draws the weights from the global random generator, as ``MLP(...)`` does. An int draws
        them as ``torch.manual_seed(seed); MLP(...)`` would, but leaves the global generator's state as
        it was. A CPU ``torch.Generator`` supplies the draws and is advanced past them; the global
        generator is again left alone.
    device, dtype:
        Where the model goes and its floating-point type; ``None`` follows ``data.train.x``.
    knobs:
        Any other :class:`MLP` keyword (``norm=``, ``norm_position=``, ``residual=``, ``bias=``).
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a deepgrad.data.Dataset (it gives n_features and n_classes), "
                        f"got {type(data).__name__}")
    if isinstance(init, str):
        init = initialisation.for_linear(init)
    elif init is not None and not callable(init):
        raise TypeError(f"init must be None, a scheme name ({', '.join(initialisation.SCHEMES)}) or a callable "
                        f"taking an nn.Linear; got {init!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be None or a floating-point torch.dtype, got {dtype!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype (float32, float64, ...), got {dtype}")

    def build() -> MLP:
        return MLP(data.n_features, data.n_classes, width=width, depth=depth, activation=activation,
                   init=init, **knobs)

    if seed is None:
        model = build()
    elif isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed, when a torch.Generator, must be a CPU generator, got one on {seed.device}")
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(seed.get_state())
            model = build()
            seed.set_state(torch.get_rng_state())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be None, a non-negative int or a torch.Generator, got {seed!r}")
    elif seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
    x = data.train.x
    return model.to(x.device if device is None else device, x.dtype if dtype is None else dtype)
