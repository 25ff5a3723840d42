"""Deep residual networks without normalisation: why they explode, and the fixes that need no batch norm.

Without batch norm, a residual stream adds the variance of every branch to its own:
``Var(x_{l+1}) = Var(x_l) + Var(F_l(x_l))`` when the branch is uncorrelated with its input. With branches
initialised to preserve variance (He et al., 2015) that doubles the variance with every block, so after L
blocks it is ``2^L`` times the stem's (:func:`stream_variance`; De & Smith 2020, Yang et al. 2019).

:class:`NormFreeResNet` is a residual MLP of ``blocks`` blocks of two linear layers whose ``method``
chooses how the branches are kept in check:

- ``"none"``: pre-activation blocks ``x + W₂ relu(W₁ relu(x))``, He-initialised, no normalisation;
- ``"batchnorm"``: the same with batch norm before each ReLU (He et al., 2016, identity mappings);
- ``"skipinit"``: ``x + α·W₂ relu(W₁ relu(x))`` with one learned scalar α per branch, initialised to 0
  (De & Smith, 2020);
- ``"rezero"``: ``x + α·W₂ relu(W₁ x)``, the ReZero form ``x + α·F(x)`` with α = 0 at the start and no
  activation in front of the branch's first layer (Bachlechner et al., 2020);
- ``"fixup"``: Fixup's block (Zhang et al., 2019) ``relu(x + s·W₂(relu(W₁(x + a₁) + a₂) + a₃) + a₄)``,
  see :class:`FixupBlock`: the last layer of every branch and the output layer start at zero, the
  other branch layer is He-initialised and multiplied by ``L^(-1/(2m-2))`` (L blocks, m = 2 layers
  per branch), and scalar biases and a scalar multiplier are added.

Also here: adaptive gradient clipping (Brock et al., 2021, "High-performance large-scale image
recognition without normalization"), :func:`unitwise_norm`, :func:`adaptive_clipped` and the callback
:class:`AdaptiveClip` for :func:`deepgrad.train.loop`; scaled weight standardisation (Brock et al.,
2021, "Characterizing signal propagation ...", after Qiao et al., 2019), :func:`scaled_standardized`
and :class:`ScaledStdLinear`; and the module-level training runs the chapter compares over seeds
(:func:`final_loss`, :func:`clip_final_loss`), which :class:`deepgrad.workers.Runs` (and
``deepgrad.evidence.compare``) can send to worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from deepgrad._checks import non_negative, one_of, positive, positive_int
from deepgrad.train import Callback, ClipGradNorm, Run, cycle, loop
from deepgrad.workers import Runs, run_many  # noqa: F401  (re-exported: the pool lived here before)

#: How the branches of a :class:`NormFreeResNet` are kept in check.
METHODS = ("none", "batchnorm", "skipinit", "rezero", "fixup")

#: γ of scaled weight standardisation for ReLU: 1/std(relu(z)) for z ~ N(0, 1), √(2 / (1 − 1/π)).
RELU_GAMMA = math.sqrt(2 / (1 - 1 / math.pi))

#: The floor on a weight's unit-wise norm in adaptive gradient clipping (Brock et al., 2021: 10⁻³).
AGC_EPS = 1e-3

#: The floor on ``N σ_i²`` in scaled weight standardisation (as in the NF-ResNets' code, 10⁻⁴): a row
#: whose entries are all equal (a zero-initialised weight) standardises to zeros, not to NaN.
WS_EPS = 1e-4


def stream_variance(blocks: int, branch_gain: float = 1.0, start: float = 1.0) -> list[float]:
    """Var(x_l) for l = 0..blocks when every branch adds ``branch_gain`` times its input's variance.

    ``Var(x_{l+1}) = Var(x_l) + Var(F_l(x_l)) = (1 + g)·Var(x_l)``, so ``Var(x_l) = (1 + g)^l · Var(x_0)``:
    geometric growth, ``2^l`` for branches that preserve variance (g = 1, He-initialised).
    """
    positive_int("blocks", blocks, minimum=0)
    non_negative("branch_gain", branch_gain)
    positive("start", start)
    return [start * (1 + branch_gain) ** l for l in range(blocks + 1)]


def _he(layer: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """He's normal initialisation, std √(2 / fan_in), times ``scale``; zero bias."""
    with torch.no_grad():
        layer.weight.normal_(0.0, scale * math.sqrt(2.0 / layer.in_features))
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


class Block(nn.Module):
    """One pre-activation residual block for ``"none"``, ``"batchnorm"``, ``"skipinit"`` and ``"rezero"``.

    ``x + α·W₂ relu(N(W₁ relu(N(x))))`` with N batch norm or the identity and α a learned scalar (0 at
    the start) or the constant 1; ``"rezero"`` drops the first ReLU and N: ``x + α·W₂ relu(W₁ x)``.
    """

    def __init__(self, width: int, method: str):
        super().__init__()
        one_of("method", method, [m for m in METHODS if m != "fixup"])
        self.method = method
        norm = method == "batchnorm"
        self.norm1 = nn.BatchNorm1d(width) if norm else nn.Identity()
        self.norm2 = nn.BatchNorm1d(width) if norm else nn.Identity()
        self.linear1 = _he(nn.Linear(width, width))
        self.linear2 = _he(nn.Linear(width, width))
        self.alpha = nn.Parameter(torch.zeros(())) if method in ("skipinit", "rezero") else None

    def branch(self, x: Tensor) -> Tensor:
        """F(x), with α applied."""
        h = x if self.method == "rezero" else torch.relu(self.norm1(x))
        out = self.linear2(torch.relu(self.norm2(self.linear1(h))))
        return out if self.alpha is None else self.alpha * out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class FixupBlock(nn.Module):
    """Fixup's residual block (Zhang et al., 2019), for linear layers, as in its reference code::

        out = relu(W₁(x + a₁) + a₂);  out = s·W₂(out + a₃) + a₄;  return relu(x + out)

    W₁ is He-initialised and multiplied by ``blocks^(-1/(2m-2))`` = ``blocks^(-1/2)`` (m = 2 layers per
    branch), W₂ starts at zero, the linear layers have no bias, and a₁..a₄ (scalar biases, 0) and s (a
    scalar multiplier, 1) are learned. The block starts as ``relu(x)``.
    """

    def __init__(self, width: int, blocks: int):
        super().__init__()
        positive_int("blocks", blocks)
        self.linear1 = _he(nn.Linear(width, width, bias=False), blocks ** -0.5)
        self.linear2 = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.linear2.weight)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (nn.Parameter(torch.zeros(())) for _ in range(4))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.linear1(x + self.bias1a) + self.bias1b)
        out = self.scale * self.linear2(out + self.bias2a) + self.bias2b
        return torch.relu(x + out)


class NormFreeResNet(nn.Module):
    """A linear stem, ``blocks`` residual blocks of two ``width × width`` layers, and a linear output.

    ``method`` is one of :data:`METHODS` (see the module docstring). The stem is He-initialised; for
    ``"fixup"`` it is followed by a ReLU (Fixup's blocks are post-activation) and the output layer
    starts at zero with a learned scalar bias in front of it, as in Fixup; the other methods end with
    ``relu(N(x))`` (pre-activation) before the output layer, which keeps PyTorch's default
    initialisation.
    """

    def __init__(self, in_features: int, out_features: int, *, width: int = 32, blocks: int = 50,
                 method: str = "none"):
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        positive_int("width", width)
        positive_int("blocks", blocks)
        one_of("method", method, METHODS)
        self.method = method
        self.stem = _he(nn.Linear(in_features, width))
        if method == "fixup":
            self.blocks = nn.ModuleList(FixupBlock(width, blocks) for _ in range(blocks))
            self.final_norm = nn.Identity()
            self.output_bias = nn.Parameter(torch.zeros(()))
            self.output = nn.Linear(width, out_features)
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        else:
            self.blocks = nn.ModuleList(Block(width, method) for _ in range(blocks))
            self.final_norm = nn.BatchNorm1d(width) if method == "batchnorm" else nn.Identity()
            self.output_bias = None
            self.output = nn.Linear(width, out_features)

    def features(self, x: Tensor) -> Tensor:
        """The signal that enters the output layer."""
        x = self.stem(x)
        if self.method == "fixup":
            x = torch.relu(x)
        for block in self.blocks:
            x = block(x)
        if self.method == "fixup":
            return x + self.output_bias
        return torch.relu(self.final_norm(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))

    def scalars(self) -> list[nn.Parameter]:
        """The zero-dimensional parameters: α of SkipInit and ReZero, Fixup's scalar biases and multipliers."""
        return [p for p in self.parameters() if p.ndim == 0]


def parameter_groups(model: NormFreeResNet, lr: float, scalar_lr_factor: float | None = None) -> list[dict]:
    """Optimiser parameter groups: the weights at ``lr``, the scalars (:meth:`NormFreeResNet.scalars`) at
    ``scalar_lr_factor × lr``. The default factor is 0.1 for Fixup (its reference code trains the
    scalar biases and multipliers at a tenth of the rate) and 1 for the other methods."""
    positive("lr", lr)
    if scalar_lr_factor is None:
        scalar_lr_factor = 0.1 if model.method == "fixup" else 1.0
    positive("scalar_lr_factor", scalar_lr_factor)
    if scalar_lr_factor == 1 or not model.scalars():
        return [{"params": list(model.parameters()), "lr": lr}]
    scalars = {id(p) for p in model.scalars()}
    return [{"params": [p for p in model.parameters() if id(p) not in scalars], "lr": lr},
            {"params": model.scalars(), "lr": scalar_lr_factor * lr}]


# --------------------------------------------------------------------------------------------
# Adaptive gradient clipping
# --------------------------------------------------------------------------------------------

def unitwise_norm(x: Tensor) -> Tensor:
    """The Frobenius norm of every unit: over each row (output unit) of a weight matrix or kernel,
    ``‖W_i‖ = (Σ_j W_ij²)^{1/2}`` with shape ``(out, 1, ...)`` for broadcasting; the whole norm of a
    vector or a scalar (Brock et al., 2021, section 4.1)."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clipped(weight: Tensor, grad: Tensor, clipping: float, eps: float = AGC_EPS) -> Tensor:
    """The gradient after adaptive gradient clipping (Brock et al., 2021, eq. 3), unit by unit:

    ``G_i ↦ λ · ‖W_i‖⋆ / ‖G_i‖ · G_i`` if ``‖G_i‖ / ‖W_i‖⋆ > λ``, else ``G_i``, with
    ``‖W_i‖⋆ = max(‖W_i‖, ε)`` and ``‖·‖`` the :func:`unitwise_norm` (``‖G_i‖`` floored at 10⁻⁶ in the
    division). λ is ``clipping``.
    """
    positive("clipping", clipping)
    non_negative("eps", eps)
    if weight.shape != grad.shape:
        raise ValueError(f"weight and grad must have the same shape, got {tuple(weight.shape)} and "
                         f"{tuple(grad.shape)}")
    max_norm = clipping * unitwise_norm(weight.detach()).clamp(min=eps)
    grad_norm = unitwise_norm(grad.detach())
    return torch.where(grad_norm > max_norm, grad * (max_norm / grad_norm.clamp(min=1e-6)), grad)


def adaptive_clip_(parameters: Iterable[Tensor], clipping: float, eps: float = AGC_EPS) -> None:
    """Adaptive gradient clipping in place on every parameter with a gradient (see :func:`adaptive_clipped`)."""
    for p in parameters:
        if p.grad is not None:
            p.grad.copy_(adaptive_clipped(p, p.grad, clipping, eps))


class AdaptiveClip(Callback):
    """Adaptive gradient clipping before every update (Brock et al., 2021), like
    :class:`~deepgrad.train.ClipGradNorm` for the global norm.

    Clips every parameter except the zero-dimensional ones (``exclude_scalars``: a scalar that starts
    at 0, like SkipInit's α, has ``‖W‖⋆ = ε`` and would be frozen) and those of the modules in
    ``exclude`` (Brock et al. leave the final linear layer unclipped).
    """

    def __init__(self, clipping: float, eps: float = AGC_EPS, *, exclude: Iterable[nn.Module] = (),
                 exclude_scalars: bool = True):
        self.clipping = positive("clipping", clipping)
        self.eps = non_negative("eps", eps)
        self.excluded = {id(p) for m in exclude for p in m.parameters()}
        self.exclude_scalars = exclude_scalars

    def clipped_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters this callback clips."""
        return [p for p in model.parameters()
                if id(p) not in self.excluded and not (self.exclude_scalars and p.ndim == 0)]

    def after_backward(self, run: Run) -> None:
        adaptive_clip_(self.clipped_parameters(run.model), self.clipping, self.eps)


# --------------------------------------------------------------------------------------------
# Scaled weight standardisation
# --------------------------------------------------------------------------------------------

def scaled_standardized(weight: Tensor, gain: float = RELU_GAMMA, eps: float = WS_EPS) -> Tensor:
    """Scaled weight standardisation (Brock et al., 2021a; Qiao et al., 2019), row by row:

    ``Ŵ_ij = γ · (W_ij − μ_i) / max(σ_i · √N, √ε)``, μ_i and σ_i the mean and (biased) standard
    deviation of row i, N its length (the fan-in), γ = ``gain``. Each row with ``N σ_i² ≥ ε`` has mean
    0 and ``Σ_j Ŵ_ij² = γ²``, so for inputs with i.i.d. entries of variance v, ``Var((Ŵ h)_i) = γ² v``,
    whatever their mean; ``eps`` (> 0) keeps a constant row (σ_i = 0) finite: it maps to zeros.
    """
    if weight.ndim < 2:
        raise ValueError(f"weight must have at least 2 dimensions (out, in, ...), got shape {tuple(weight.shape)}")
    positive("eps", eps)
    flat = weight.reshape(weight.shape[0], -1)
    fan_in = flat.shape[1]
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return (gain * (flat - mean) * torch.rsqrt((var * fan_in).clamp(min=eps))).reshape(weight.shape)


class ScaledStdLinear(nn.Linear):
    """A linear layer whose weight is used through :func:`scaled_standardized` (γ = 1 here: the
    activation's γ multiplies the activation, as in NF-ResNets)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, scaled_standardized(self.weight, 1.0), self.bias)


# --------------------------------------------------------------------------------------------
# Training runs the chapter compares over seeds (module level, so that they can go to worker processes)
# --------------------------------------------------------------------------------------------

def _digits():
    from deepgrad.data import load_digits
    from deepgrad.repro import default_device

    return load_digits(device=default_device())


_DATA: dict[str, object] = {}


def _data():
    if "digits" not in _DATA:
        _DATA["digits"] = _digits()
    return _DATA["digits"]


def train(method: str, lr: float, seed: int, *, blocks: int = 50, width: int = 32, steps: int = 150,
          batch_size: int = 64, momentum: float = 0.9, callbacks: Iterable[Callback] = (),
          clip: str | None = None, clip_value: float | None = None, scalar_lr_factor: float | None = None):
    """Train a :class:`NormFreeResNet` on the digits with SGD (momentum) on :func:`deepgrad.train.loop`.

    Seed ``seed`` fixes the initial weights and the order of the mini-batches. ``clip`` is ``None``,
    ``"norm"`` (global-norm clipping at ``clip_value``) or ``"agc"`` (:class:`AdaptiveClip` with
    λ = ``clip_value``, the output layer and the scalars unclipped); ``clip_value`` must be a positive
    number when ``clip`` is set. ``scalar_lr_factor`` goes to :func:`parameter_groups`. Returns
    ``(model, history)``.
    """
    from deepgrad.repro import seed_everything

    one_of("clip", clip, [None, "norm", "agc"])
    if clip is not None:
        if clip_value is None:
            raise ValueError(f"clip_value: give a positive threshold with clip={clip!r}")
        positive("clip_value", clip_value)
    data = _data()
    generator = seed_everything(seed)
    model = NormFreeResNet(data.train.x.shape[1], 10, width=width, blocks=blocks,
                           method=method).to(data.train.x.device)
    optimizer = torch.optim.SGD(parameter_groups(model, lr, scalar_lr_factor), lr=lr, momentum=momentum)
    hooks = list(callbacks)
    if clip == "norm":
        hooks.append(ClipGradNorm(clip_value))
    elif clip == "agc":
        hooks.append(AdaptiveClip(clip_value, exclude=[model.output]))
    history = loop(model, cycle(data.train, batch_size, generator=generator), optimizer, steps=steps,
                   callbacks=hooks)
    return model, history


def mean_last(history, last: int = 20) -> float:
    """Mean mini-batch training loss over the last ``last`` steps; ``nan`` for a run that diverged."""
    positive_int("last", last)
    if history.diverged_at is not None:
        return math.nan
    tail = history.train_loss[-last:]
    return sum(tail) / len(tail)


def final_loss(method: str, lr: float, seed: int, **knobs) -> float:
    """:func:`train`'s final loss (:func:`mean_last`), ``nan`` if it diverged."""
    return mean_last(train(method, lr, seed, **knobs)[1])


def clip_final_loss(clip: str, clip_value: float, lr: float, seed: int, *, method: str = "skipinit",
                    **knobs) -> float:
    """:func:`final_loss` with gradient clipping (``clip`` = ``"norm"`` or ``"agc"``)."""
    return final_loss(method, lr, seed, clip=clip, clip_value=clip_value, **knobs)
