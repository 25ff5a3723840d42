"""Weight initialisation schemes, each written from its formula.

Every scheme draws a weight tensor with mean zero and a variance chosen from the tensor's fans. For a
weight of shape (out, in, *kernel), as ``nn.Linear`` and ``nn.Conv*d`` store them, the receptive field
is the product of the kernel sizes (1 for a linear layer) and::

    fan_in  = size(1) · receptive field      (inputs summed by one output unit)
    fan_out = size(0) · receptive field      (outputs one input unit feeds)

as in ``torch.nn.init``. The schemes, with their variances:

==================  ==============================  ================================================
scheme              Var(W_ij)                       source
==================  ==============================  ================================================
xavier (Glorot)     gain² · 2 / (fan_in + fan_out)  Glorot & Bengio (2010) [glorot2010understanding]
he (Kaiming)        gain² / fan (fan_in or fan_out) He et al. (2015) [he2015delving]
lecun               1 / fan_in                      LeCun et al. (1998) [lecun1998efficient]
orthogonal          gain² / fan_in, for square W    Saxe et al. (2014) [saxe2014exact]
pytorch default     1 / (3 · fan_in)                ``nn.Linear``'s own rule (not a paper's)
==================  ==============================  ================================================

A uniform draw U(-b, b) has variance b²/3, so every uniform variant uses b = √3 · std.

Each function fills its tensor in place under ``torch.no_grad()``, returns it, and takes an optional
``generator`` (a ``torch.Generator`` on the tensor's device) so that a draw can be reproduced without
touching the global random state. :data:`SCHEMES` and :func:`get` name them; :func:`for_linear` turns
one into the ``init=`` callable of :class:`deepgrad.models.MLP`; :func:`pytorch_default_linear_`
reproduces what ``nn.Linear`` does when nobody asks; :func:`product_singular_values` shows why
orthogonal matrices, not merely variance-preserving ones, make a deep linear map an isometry;
:func:`variance` gives a scheme's Var(W_ij) from its formula, :data:`RECOMMENDED` the scheme for each
activation. :func:`signal_profile`, the per-layer size of activations and back-propagated gradients
in a random stack initialised by any scheme, is :mod:`deepgrad.propagation`'s, which draws its
weights (Gaussian or orthogonal) with this module's samplers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from deepgrad._checks import finite, non_negative, one_of, positive_int
from deepgrad.activations import LEAKY_SLOPE, PRELU_INIT

if TYPE_CHECKING:
    from deepgrad.propagation import SignalProfile

#: Which fan :func:`he_normal_` and :func:`he_uniform_` divide by.
MODES = ("fan_in", "fan_out")
#: Activations :func:`gain` knows: torch's names (``torch.nn.init.calculate_gain``) and the book's aliases.
GAIN_NAMES = (
    "identity", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "logistic", "tanh", "relu", "leaky_relu", "prelu", "selu",
)
#: Activations whose gain takes a parameter (the negative slope), with its default.
_SLOPE_DEFAULTS = {"leaky_relu": LEAKY_SLOPE, "prelu": PRELU_INIT}
_LINEAR_NAMES = ("identity", "linear", "conv1d", "conv2d", "conv3d",
                 "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
#: Weight matrices :func:`product_singular_values` multiplies.
PRODUCT_SCHEMES = ("gaussian", "orthogonal")


# ----------------------------------------------------------------------------------------------
# Fans and gains
# ----------------------------------------------------------------------------------------------

def _tensor(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value



def fans(tensor: Tensor) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight of shape (out, in, *kernel).

    fan_in = size(1) · r and fan_out = size(0) · r, where r = ∏ kernel sizes (1 for a matrix): the
    number of inputs summed by one output unit, and of outputs one input feeds. Same as torch's
    ``nn.init._calculate_fan_in_and_fan_out``.
    """
    _tensor("tensor", tensor)
    if tensor.dim() < 2:
        raise ValueError(f"tensor must have at least 2 dimensions (out, in, *kernel) to have fans, "
                         f"got shape {tuple(tensor.shape)}")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.size(1) * receptive_field, tensor.size(0) * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    one_of("mode", mode, MODES)
    fan_in, fan_out = fans(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"tensor has a zero {mode} (shape {tuple(tensor.shape)}): no scale can be derived")
    return fan


def gain(activation: str, param: float | None = None) -> float:
    """The factor by which a scheme's standard deviation is multiplied for ``activation``.

    The same values as ``torch.nn.init.calculate_gain``; which are derived and which are conventions:

    - identity / linear / conv*: 1. Derived: a linear layer preserves the variance when Var = 1/fan.
    - relu: √2. Derived (He et al., 2015): ReLU zeroes half of a symmetric input, so E[relu(z)²] = q/2.
    - leaky_relu, prelu: √(2 / (1 + a²)) with negative slope a (``param``; default 0.01 for
      leaky_relu, torch's, and 0.25 for prelu, its initial slope). Derived (He et al., 2015) the same way.
    - tanh: 5/3. A convention, not a derivation: tanh'(0) = 1, so linearising at 0 gives 1 (Glorot &
      Bengio's setting); 5/3 is an empirical choice that offsets tanh's contraction of the variance
      (E[tanh(z)²] ≈ 0.39 for z ~ N(0, 1)).
    - sigmoid / logistic: 1. A convention: linearising at 0, where σ'(0) = 1/4, would give 4, and the
      sigmoid's mean of 1/2 breaks the zero-mean assumption of every scheme here (the Xavier scheme
      was derived for tanh-like units, not for the sigmoid).
    - selu: 3/4. A convention torch found empirically (pytorch/pytorch#50664), *not* what SELU's
      self-normalisation needs: Klambauer et al. (2017) derive Var = 1/fan_in, gain 1, i.e.
      :func:`lecun_normal_`.

    ``param`` is the negative slope and applies only to leaky_relu and prelu.
    """
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name (str), one of {', '.join(GAIN_NAMES)}; got {activation!r}")
    one_of("activation", activation, GAIN_NAMES)
    if activation in _SLOPE_DEFAULTS:
        slope = _SLOPE_DEFAULTS[activation] if param is None else finite("param", param)
        return math.sqrt(2.0 / (1 + slope**2))
    if param is not None:
        raise ValueError(f"param (a negative slope) applies only to {', '.join(_SLOPE_DEFAULTS)}; "
                         f"got param={param!r} for activation {activation!r}")
    if activation in _LINEAR_NAMES or activation in ("sigmoid", "logistic"):
        return 1.0
    if activation == "tanh":
        return 5.0 / 3
    if activation == "relu":
        return math.sqrt(2.0)
    return 3.0 / 4  # selu


# ----------------------------------------------------------------------------------------------
# Plain draws
# ----------------------------------------------------------------------------------------------

def constant_(tensor: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with ``value``: every unit of a layer then computes the same function and
    receives the same gradient, so training never tells them apart (the symmetry problem).

    ``generator`` is accepted, and ignored, so that every scheme has the same signature.
    """
    _tensor("tensor", tensor)
    value = finite("value", value)
    with torch.no_grad():
        return tensor.fill_(value)


def zeros_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with 0 (:func:`constant_` with value 0)."""
    return constant_(tensor, 0.0)


def normal_(tensor: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with draws from N(0, std²), whatever its fans: a scale chosen by hand."""
    _tensor("tensor", tensor)
    std = non_negative("std", std)
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def uniform_(tensor: Tensor, bound: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with draws from U(-bound, bound): variance bound²/3."""
    _tensor("tensor", tensor)
    bound = non_negative("bound", bound)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


# ----------------------------------------------------------------------------------------------
# Glorot / Xavier, He / Kaiming, LeCun
# ----------------------------------------------------------------------------------------------

def xavier_std(tensor: Tensor, gain: float = 1.0) -> float:
    """gain · √(2 / (fan_in + fan_out)): Glorot & Bengio's compromise between keeping the forward
    variance (Var = 1/fan_in) and the backward variance (Var = 1/fan_out) of a linear layer."""
    g = non_negative("gain", gain)
    fan_in, fan_out = fans(tensor)
    if fan_in + fan_out == 0:
        raise ValueError(f"tensor has no fans (shape {tuple(tensor.shape)}): no scale can be derived")
    return g * math.sqrt(2.0 / (fan_in + fan_out))


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot normal: W ~ N(0, σ²) with σ² = gain² · 2 / (fan_in + fan_out).

    Glorot & Bengio (2010) [glorot2010understanding], derived for linear and tanh-like units around 0.
    Same distribution as ``torch.nn.init.xavier_normal_``.
    """
    return normal_(tensor, xavier_std(tensor, gain), generator=generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot uniform ("normalised initialisation"): W ~ U(-b, b), b = gain · √(6 / (fan_in + fan_out)),
    so that Var = b²/3 = gain² · 2 / (fan_in + fan_out).

    Glorot & Bengio (2010) [glorot2010understanding], their eq. 16. Same distribution as
    ``torch.nn.init.xavier_uniform_``.
    """
    return uniform_(tensor, math.sqrt(3.0) * xavier_std(tensor, gain), generator=generator)


def he_std(tensor: Tensor, activation: str = "relu", param: float | None = None, mode: str = "fan_in") -> float:
    """gain(activation, param) / √fan: for ReLU √(2/fan_in), the standard deviation that keeps
    E[z²] constant from layer to layer (He et al., 2015)."""
    g = gain(activation, param)
    return g / math.sqrt(_fan(tensor, mode))


def he_normal_(tensor: Tensor, activation: str = "relu", param: float | None = None, mode: str = "fan_in",
               generator: torch.Generator | None = None) -> Tensor:
    """He (Kaiming) normal: W ~ N(0, σ²) with σ² = gain² / fan; for ReLU σ = √(2 / fan_in).

    He et al. (2015) [he2015delving]. ``mode="fan_in"`` preserves the forward variance,
    ``mode="fan_out"`` the backward one; the paper shows either suffices for a deep network (the
    two differ by a fixed ratio, not one compounding with depth). The standard deviation is
    √(2/n), not √(α/n): the 2 comes from ReLU zeroing half its input. Same distribution as
    ``torch.nn.init.kaiming_normal_`` (whose default activation, leaky_relu with slope 0, has the same gain).
    """
    return normal_(tensor, he_std(tensor, activation, param, mode), generator=generator)


def he_uniform_(tensor: Tensor, activation: str = "relu", param: float | None = None, mode: str = "fan_in",
                generator: torch.Generator | None = None) -> Tensor:
    """He (Kaiming) uniform: W ~ U(-b, b), b = √3 · gain / √fan, so that Var = gain² / fan.

    He et al. (2015) [he2015delving]. Same distribution as ``torch.nn.init.kaiming_uniform_``.
    """
    return uniform_(tensor, math.sqrt(3.0) * he_std(tensor, activation, param, mode), generator=generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun normal: W ~ N(0, 1/fan_in).

    LeCun et al. (1998) [lecun1998efficient], for any layer (not specifically convolutional ones):
    it keeps the variance of a linear layer's output equal to its input's. It is the initialisation
    SELU's self-normalisation assumes (Klambauer et al., 2017 [klambauer2017self]): ``he_normal_``
    with ``activation="linear"``, not with torch's ``selu`` gain of 3/4.
    """
    return normal_(tensor, 1.0 / math.sqrt(_fan(tensor, "fan_in")), generator=generator)


def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun uniform: W ~ U(-b, b), b = √(3 / fan_in), so that Var = 1/fan_in (LeCun et al., 1998)."""
    return uniform_(tensor, math.sqrt(3.0 / _fan(tensor, "fan_in")), generator=generator)


# ----------------------------------------------------------------------------------------------
# Orthogonal
# ----------------------------------------------------------------------------------------------

def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with gain × a random (semi-)orthogonal matrix (Saxe et al., 2014 [saxe2014exact]).

    The tensor is viewed as a rows × cols matrix (rows = size(0), the rest flattened). Draw a Gaussian
    matrix A of shape max × min, factor A = QR, and multiply each column of Q by the sign of R's
    diagonal entry: without that correction Q depends on the QR routine's sign convention and is not
    uniformly (Haar) distributed (Mezzadri, 2007). Tall matrices (rows ≥ cols) get orthonormal columns,
    QᵀQ = I; wide ones orthonormal rows, QQᵀ = I (Q is then transposed). Every singular value is
    ``gain``, so a product of such matrices keeps every direction's length. Same distribution (and,
    given the same generator state, the same draws) as ``torch.nn.init.orthogonal_``.
    """
    _tensor("tensor", tensor)
    g = non_negative("gain", gain)
    if tensor.dim() < 2:
        raise ValueError(f"tensor must have at least 2 dimensions to be orthogonal, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    with torch.no_grad():
        a = tensor.new_empty((rows, cols)).normal_(0.0, 1.0, generator=generator)
        if rows < cols:
            a = a.t()
        q, r = torch.linalg.qr(a)
        q = q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q.dtype)
        if rows < cols:
            q = q.t()
        tensor.view_as(q).copy_(q).mul_(g)
    return tensor


# ----------------------------------------------------------------------------------------------
# PyTorch's default for nn.Linear
# ----------------------------------------------------------------------------------------------

#: The ``a`` ``nn.Linear`` passes to ``kaiming_uniform_``: its weights have Var = 1/(3·fan_in).
PYTORCH_DEFAULT_SLOPE = math.sqrt(5.0)


def pytorch_default_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The weight rule of ``nn.Linear`` (and ``nn.Conv*d``): ``kaiming_uniform_(w, a=√5)``.

    That is He uniform with leaky_relu's gain at slope a = √5: gain² = 2/(1 + 5) = 1/3, so
    b = √3 · gain / √fan_in = 1/√fan_in and Var = 1/(3 · fan_in): a third of LeCun's variance and a
    sixth of He's for ReLU. It is not "He initialisation", and a deep ReLU stack so initialised
    loses signal layer by layer. (A framework convention; see pytorch/pytorch#57109.)
    """
    return he_uniform_(tensor, "leaky_relu", PYTORCH_DEFAULT_SLOPE, "fan_in", generator=generator)


def pytorch_default_linear_(layer: nn.Linear, generator: torch.Generator | None = None) -> nn.Linear:
    """Reproduce ``nn.Linear.reset_parameters``: weight by :func:`pytorch_default_`, then the bias
    from U(-1/√fan_in, 1/√fan_in). With the same random state it draws exactly what ``nn.Linear`` does."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer must be an nn.Linear, got {type(layer).__name__}")
    pytorch_default_(layer.weight, generator=generator)
    if layer.bias is not None:
        fan_in, _ = fans(layer.weight)
        uniform_(layer.bias, 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0, generator=generator)
    return layer


# ----------------------------------------------------------------------------------------------
# Registry and the MLP's init= callable
# ----------------------------------------------------------------------------------------------

#: Every scheme by name. Each callable fills a tensor: ``fn(tensor, ..., generator=None)``.
SCHEMES: dict[str, Callable[..., Tensor]] = {
    "constant": constant_,
    "zeros": zeros_,
    "normal": normal_,
    "uniform": uniform_,
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "he_normal": he_normal_,
    "he_uniform": he_uniform_,
    "lecun_normal": lecun_normal_,
    "lecun_uniform": lecun_uniform_,
    "orthogonal": orthogonal_,
    "pytorch_default": pytorch_default_,
}


def get(name: str) -> Callable[..., Tensor]:
    """Return the scheme called ``name`` (a key of :data:`SCHEMES`)."""
    if not isinstance(name, str):
        raise TypeError(f"scheme must be a name (str), one of {', '.join(SCHEMES)}; got {name!r}")
    one_of("scheme", name, SCHEMES)
    return SCHEMES[name]


def for_linear(name: str, **kwargs: Any) -> Callable[[nn.Linear], None]:
    """The ``init=`` callable of :class:`deepgrad.models.MLP` for scheme ``name``.

    It fills each layer's weight with ``get(name)(weight, **kwargs)`` and its bias with zeros, except
    for ``"pytorch_default"``, which keeps ``nn.Linear``'s own bias rule (:func:`pytorch_default_linear_`).
    ``kwargs`` (``std=``, ``gain=``, ``activation=``, ``generator=``, ...) are checked against the
    scheme's signature now, not at the first layer::

        dg.models.mlp_for(digits, depth=30, init=init.for_linear("he_normal", generator=g))
    """
    scheme = get(name)
    try:
        inspect.signature(scheme).bind(torch.empty(1, 1), **kwargs)
    except TypeError as error:
        raise TypeError(f"for_linear({name!r}): {error}; the scheme's signature is "
                        f"{name}{inspect.signature(scheme)}") from None

    def initialise(layer: nn.Linear) -> None:
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"layer must be an nn.Linear, got {type(layer).__name__}")
        if name == "pytorch_default":
            pytorch_default_linear_(layer, **kwargs)
            return
        scheme(layer.weight, **kwargs)
        if layer.bias is not None:
            zeros_(layer.bias)

    initialise.__name__ = initialise.__qualname__ = f"for_linear_{name}"
    return initialise


# ----------------------------------------------------------------------------------------------
# Products of random matrices (Saxe et al., 2014)
# ----------------------------------------------------------------------------------------------

def product_singular_values(depth: int, size: int, scheme: str,
                            generator: torch.Generator | None = None) -> Tensor:
    """Singular values (descending, float64) of W_depth ⋯ W_1 for ``depth`` random size × size matrices.

    ``scheme="gaussian"``: W_ij ~ N(0, 1/size), variance-preserving: E‖Wx‖² = ‖x‖², so the mean
    squared singular value of the product stays 1 in expectation, yet the singular values spread
    over many orders of magnitude as depth grows (the product is far from an isometry).
    ``scheme="orthogonal"``: W from :func:`orthogonal_`; the product is orthogonal and every singular
    value is 1 (Saxe et al., 2014 [saxe2014exact], dynamical isometry).

    Computed in float64: singular values below about 1e-15 × the largest are round-off, not the
    (smaller still) true values.
    """
    positive_int("depth", depth)
    positive_int("size", size)
    one_of("scheme", scheme, PRODUCT_SCHEMES)
    product = torch.eye(size, dtype=torch.float64)
    w = torch.empty(size, size, dtype=torch.float64)
    for _ in range(depth):
        if scheme == "gaussian":
            normal_(w, 1.0 / math.sqrt(size), generator=generator)
        else:
            orthogonal_(w, generator=generator)
        product = w @ product
    return torch.linalg.svdvals(product)


# ----------------------------------------------------------------------------------------------
# Variances by formula, recommendations, and the random stack's profile
# ----------------------------------------------------------------------------------------------

#: Schemes whose variance :func:`variance` gives from the tensor's fans alone (plus a gain).
_FAN_SCHEMES = ("xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
                "orthogonal", "pytorch_default")


def variance(name: str, tensor: Tensor, **kwargs: Any) -> float:
    """Var(W_ij) that scheme ``name`` gives ``tensor``, from the formula (no draw is made).

    xavier_*: gain² · 2/(fan_in + fan_out); he_*: gain(activation, param)² / fan (``mode``);
    lecun_*: 1/fan_in; pytorch_default: 1/(3 · fan_in); orthogonal: gain² / max(rows, cols), the
    mean square entry of gain × a matrix with orthonormal rows or columns (gain²/fan_in for a square
    one). ``kwargs`` are the scheme's own (``gain=``, ``activation=``, ``param=``, ``mode=``);
    a ``generator`` is not needed and not accepted. The tests compare each value with the sample
    variance of the scheme's draws and with ``torch.nn.init``'s.
    """
    one_of("scheme", name, _FAN_SCHEMES)
    _tensor("tensor", tensor)
    if "generator" in kwargs:
        raise TypeError("variance() draws nothing: do not pass a generator")
    try:
        inspect.signature(SCHEMES[name]).bind(tensor, **kwargs)
    except TypeError as error:
        raise TypeError(f"variance({name!r}): {error}") from None
    if name.startswith("xavier"):
        return xavier_std(tensor, kwargs.get("gain", 1.0)) ** 2
    if name.startswith("he"):
        return he_std(tensor, **kwargs) ** 2
    if name.startswith("lecun"):
        return 1.0 / _fan(tensor, "fan_in")
    if name == "pytorch_default":
        return he_std(tensor, "leaky_relu", PYTORCH_DEFAULT_SLOPE, "fan_in") ** 2
    rows = tensor.size(0)  # orthogonal
    cols = tensor.numel() // rows if rows else 0
    if rows == 0 or cols == 0:
        raise ValueError(f"tensor has no entries (shape {tuple(tensor.shape)}): no variance to speak of")
    return non_negative("gain", kwargs.get("gain", 1.0)) ** 2 / max(rows, cols)


#: The scheme this book recommends for each activation, with its keyword arguments: the one whose
#: variance makes χ = 1 for linear layers (LeCun, Glorot), for rectifiers (He) and for SELU (LeCun,
#: as Klambauer et al. derive). For tanh, Glorot's scheme (gain 1, the linearisation at 0) is the
#: paper's; torch suggests a gain of 5/3. No scheme rescues the sigmoid: its critical σ_w² is near 100.
RECOMMENDED: dict[str, tuple[str, dict[str, Any]]] = {
    "identity": ("lecun_normal", {}),
    "tanh": ("xavier_normal", {}),
    "sigmoid": ("xavier_normal", {}),
    "relu": ("he_normal", {"activation": "relu"}),
    "leaky_relu": ("he_normal", {"activation": "leaky_relu"}),
    "selu": ("lecun_normal", {}),
}


def recommended(activation: str) -> tuple[str, dict[str, Any]]:
    """``(scheme, kwargs)`` of :data:`RECOMMENDED` for ``activation`` (a copy of the kwargs)."""
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name (str), one of {', '.join(RECOMMENDED)}; got {activation!r}")
    one_of("activation", activation, RECOMMENDED)
    scheme, kwargs = RECOMMENDED[activation]
    return scheme, dict(kwargs)


def signal_profile(activation: str, scheme: str, *, depth: int, width: int, batch: int = 256,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                   scheme_kwargs: dict[str, Any] | None = None) -> SignalProfile:
    """:func:`deepgrad.propagation.signal_profile`, reached from here too: per-layer std of the
    activations a^l and of the back-propagated gradients δ^l = ∂L/∂z^l in a random stack whose
    weights this module's ``scheme`` draws. The measurement itself lives in :mod:`deepgrad.propagation`."""
    from deepgrad import propagation  # propagation imports this module: import it when called

    return propagation.signal_profile(activation, scheme, depth=depth, width=width, batch=batch,
                                      generator=generator, dtype=dtype, scheme_kwargs=scheme_kwargs)
