"""Model builders with the knobs the book turns: depth, width, activation, init, norm, residual.

:class:`MLP` is the network of most chapters: ``depth`` hidden layers of ``width`` units, each
``Linear → [norm] → activation`` (or ``Linear → activation → [norm]``), then a linear output layer.
With ``residual=True`` every hidden layer after the first adds its input to its output
(a^l = a^{l-1} + f(z^l)), the skip connection of He et al. (2016).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from deepgrad import activations
from deepgrad._checks import one_of, positive_int

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
