"""Residual blocks and residual MLPs: the shortcut x + F(x), and the plain net it is compared with.

A residual block computes ``x + F(x)``: its input, carried unchanged by the *shortcut* (or skip
connection), plus a *residual branch* F of two linear layers. Its Jacobian is ``I + ∂F/∂x``, so the
back-propagated gradient always has one path on which nothing multiplies it.

Three kinds of block, each with two linear layers of ``width`` units and (by default) batch norm:

- ``"post"``: He et al. (2016, "Deep residual learning"), the original, post-activation block
  ``x ↦ relu(x + BN(W₂ relu(BN(W₁ x))))``; the ReLU after the addition sits on the shortcut path.
- ``"pre"``: He et al. (2016, "Identity mappings in deep residual networks"), the pre-activation
  block ``x ↦ x + W₂ relu(BN(W₁ relu(BN(x))))``; the shortcut is a pure identity from block to block.
- ``"plain"``: the post-activation block without its shortcut, ``x ↦ relu(BN(W₂ relu(BN(W₁ x))))``,
  the "plain" network of He et al. (2016) with the same layers and parameters.

Knobs of the shortcut and the branch: ``shortcut_scale`` λ and ``branch_scale`` μ give
``λ·x + μ·F(x)`` (the "constant scaling" experiment of the identity-mappings paper, λ = μ = 0.5);
``rezero=True`` multiplies the branch by a learned scalar α that starts at 0 (Bachlechner et al.,
2020), so that every block is the identity at initialisation, the idea behind ReZero and Fixup
(Zhang et al., 2019).

:class:`ResidualMLP` stacks ``blocks`` blocks between a linear stem (input → width) and a linear
output layer: ``2·blocks + 2`` linear layers in all, counted like He et al. (2016) count the
weighted layers of their 6n + 2-layer CIFAR networks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepgrad._checks import flag, fraction, non_negative, one_of, positive, positive_int
from deepgrad.diagnostics import Recorder
from deepgrad.train import Callback, Run

#: Kinds of block: He et al.'s post-activation, the identity-mappings pre-activation, no shortcut.
KINDS = ("post", "pre", "plain")


def _norm(width: int, norm: bool) -> nn.Module:
    return nn.BatchNorm1d(width) if norm else nn.Identity()



class ResidualBlock(nn.Module):
    """One block of two linear layers, with or without the shortcut (see the module docstring).

    Parameters
    ----------
    width:
        Units of the block's input, of its hidden layer and of its output (the shortcut is the
        identity, so they are equal).
    kind:
        ``"post"`` (He et al., 2016), ``"pre"`` (He et al., 2016, identity mappings) or ``"plain"``
        (the post-activation block without the shortcut).
    norm:
        Batch norm where the papers put it (``True``), or none (``False``).
    shortcut_scale, branch_scale:
        λ and μ in ``λ·x + μ·F(x)`` (both 1 in ResNets). Not allowed for ``"plain"``, which has no
        sum.
    rezero:
        Multiply the branch by a learned scalar ``alpha`` initialised to 0 (ReZero, Bachlechner et
        al., 2020): the block starts as the identity (``"pre"``) or as ``relu`` (``"post"``).
    """

    def __init__(self, width: int, kind: str = "post", *, norm: bool = True, shortcut_scale: float = 1.0,
                 branch_scale: float = 1.0, rezero: bool = False):
        super().__init__()
        positive_int("width", width)
        one_of("kind", kind, KINDS)
        flag("norm", norm)
        flag("rezero", rezero)
        non_negative("shortcut_scale", shortcut_scale)
        non_negative("branch_scale", branch_scale)
        if kind == "plain" and (shortcut_scale != 1 or branch_scale != 1 or rezero):
            raise ValueError("a 'plain' block has no shortcut: shortcut_scale, branch_scale and rezero "
                             "need kind='post' or 'pre'")
        self.kind = kind
        self.width = width
        self.shortcut_scale = float(shortcut_scale)
        self.branch_scale = float(branch_scale)
        self.linear1 = nn.Linear(width, width)
        self.linear2 = nn.Linear(width, width)
        self.norm1 = _norm(width, norm)
        self.norm2 = _norm(width, norm)
        self.alpha = nn.Parameter(torch.zeros(())) if rezero else None

    @property
    def has_shortcut(self) -> bool:
        """Whether the block adds its input to the branch (``False`` only for ``"plain"``)."""
        return self.kind != "plain"

    def branch(self, x: Tensor) -> Tensor:
        """The residual branch F(x), with the scales μ and α applied (and no final ReLU for "post")."""
        if self.kind == "pre":
            out = self.linear2(torch.relu(self.norm2(self.linear1(torch.relu(self.norm1(x))))))
        else:
            out = self.norm2(self.linear2(torch.relu(self.norm1(self.linear1(x)))))
        if self.branch_scale != 1:
            out = self.branch_scale * out
        if self.alpha is not None:
            out = self.alpha * out
        return out

    def forward(self, x: Tensor) -> Tensor:
        f = self.branch(x)
        if self.kind == "plain":
            return torch.relu(f)
        total = (self.shortcut_scale * x if self.shortcut_scale != 1 else x) + f
        return torch.relu(total) if self.kind == "post" else total

    def extra_repr(self) -> str:
        extra = "" if self.shortcut_scale == 1 else f", shortcut_scale={self.shortcut_scale:g}"
        extra += "" if self.branch_scale == 1 else f", branch_scale={self.branch_scale:g}"
        extra += ", rezero=True" if self.alpha is not None else ""
        return f"width={self.width}, kind={self.kind!r}{extra}"


class ResidualMLP(nn.Module):
    """A stem, ``blocks`` residual (or plain) blocks and a linear output: ``2·blocks + 2`` linear layers.

    The stem is ``relu(BN(W x))`` (input → ``width``) for ``"post"`` and ``"plain"`` blocks and a bare
    linear map for ``"pre"`` blocks, which then end with ``relu(BN(·))`` before the output layer, as
    in He et al. (2016, identity mappings). Keyword arguments other than ``in_features``,
    ``out_features``, ``width`` and ``blocks`` go to every :class:`ResidualBlock`.
    """

    def __init__(self, in_features: int, out_features: int, *, width: int = 64, blocks: int = 3,
                 kind: str = "post", norm: bool = True, shortcut_scale: float = 1.0,
                 branch_scale: float = 1.0, rezero: bool = False):
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        positive_int("width", width)
        positive_int("blocks", blocks)
        one_of("kind", kind, KINDS)
        flag("norm", norm)
        self.kind = kind
        self.stem = nn.Linear(in_features, width)
        self.stem_norm = _norm(width, norm) if kind != "pre" else nn.Identity()
        self.blocks = nn.ModuleList(
            ResidualBlock(width, kind, norm=norm, shortcut_scale=shortcut_scale,
                          branch_scale=branch_scale, rezero=rezero)
            for _ in range(blocks)
        )
        self.final_norm = _norm(width, norm) if kind == "pre" else nn.Identity()
        self.output = nn.Linear(width, out_features)

    @classmethod
    def with_layers(cls, in_features: int, out_features: int, layers: int, **kwargs) -> ResidualMLP:
        """The network with ``layers`` linear layers in all (an even number >= 4): ``(layers - 2) / 2`` blocks."""
        positive_int("layers", layers, minimum=4)
        if layers % 2:
            raise ValueError(f"layers must be even (two per block plus the stem and the output), got {layers}")
        return cls(in_features, out_features, blocks=(layers - 2) // 2, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.kind != "pre":
            x = torch.relu(self.stem_norm(x))
        for block in self.blocks:
            x = block(x)
        if self.kind == "pre":
            x = torch.relu(self.final_norm(x))
        return self.output(x)

    @property
    def n_layers(self) -> int:
        """Number of linear layers, ``2·blocks + 2``."""
        return 2 * len(self.blocks) + 2

    def linear_layers(self) -> list[nn.Linear]:
        """Every linear layer, from the input side to the output."""
        inner = [layer for block in self.blocks for layer in (block.linear1, block.linear2)]
        return [self.stem, *inner, self.output]


def block_input_gradients(model: ResidualMLP, x: Tensor, y: Tensor) -> list[float]:
    """‖∂L/∂x_l‖ at the input x_l of every block l (first block first) and at the output of the last.

    One forward and backward pass of the mean cross-entropy on ``(x, y)``; the back-propagated
    gradient at the ``blocks + 1`` points between blocks, the quantity whose product over blocks is
    ∏ (I + ∂F/∂x) for a residual stack. Parameters are untouched; their ``.grad`` is left as it was
    before the call. Batch norm in training mode updates its running statistics, as in training.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"model must be a ResidualMLP, got {type(model).__name__}")
    kept: list[Tensor] = []
    saved = [p.grad for p in model.parameters()]
    with Recorder(model, statistics=False) as rec:
        for block in model.blocks:
            rec.on_forward_pre(block, lambda module, inputs: kept.append(inputs[0]))
        rec.on_forward(model.blocks[-1], lambda module, inputs, output: kept.append(output))
        try:
            loss = nn.functional.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, kept, allow_unused=True)
        finally:
            for p, g in zip(model.parameters(), saved, strict=True):
                p.grad = g
    return [math.nan if g is None else float(torch.linalg.vector_norm(g.double())) for g in grads]


def freeze_batch_statistics(model: nn.Module, x: Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of the batch ``x``, then switch to eval mode.

    One forward pass in training mode with cumulative averaging (``momentum=None``) on freshly reset
    statistics makes each ``nn.BatchNorm1d`` store the mean and (unbiased) variance of its input
    over ``x``. In evaluation mode the model then normalises exactly as it did for ``x`` in training
    mode (up to the n/(n − 1) variance correction), but every example's output depends on that example
    alone, so per-example input gradients are defined. Returns the model, in evaluation mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    return model.eval()


# --------------------------------------------------------------------------------------------
# Degradation trained to the end of a schedule (module level, so that worker processes can run it)
# --------------------------------------------------------------------------------------------

_DIGITS: dict[str, object] = {}


def _digits():
    """The digits on the default device, loaded once per process."""
    if "digits" not in _DIGITS:
        from deepgrad.data import load_digits
        from deepgrad.repro import default_device

        _DIGITS["digits"] = load_digits(device=default_device())
    return _DIGITS["digits"]


def training_set_fit(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """``(loss, error)`` of ``model`` on the whole training set ``(x, y)``: mean cross-entropy and
    share of misclassified examples.

    A copy of the model is evaluated, with its batch norms' statistics set to those of ``x``
    (:func:`freeze_batch_statistics`), so every example is normalised by the statistics of the whole
    training set and the model itself (its mode, weights and running statistics) is left untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    probe = freeze_batch_statistics(copy.deepcopy(model), x)
    with torch.no_grad():
        logits = probe(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        error = float((logits.argmax(1) != y).double().mean())
    return loss, error


@dataclass(frozen=True)
class ScheduleEnd:
    """Training loss and error on the whole training set at the checkpoints of one run of
    :func:`train_to_end` (NaN at the checkpoints a diverged run did not reach)."""

    steps: tuple[int, ...]
    loss: tuple[float, ...]
    error: tuple[float, ...]
    diverged: bool

    @property
    def final_loss(self) -> float:
        """Training loss at the end of the schedule."""
        return self.loss[-1]

    @property
    def final_error(self) -> float:
        """Training error at the end of the schedule."""
        return self.error[-1]


class _Checkpoints(Callback):
    """After the steps in ``at``, record :func:`training_set_fit` on the training split."""

    def __init__(self, at: Sequence[int], x: Tensor, y: Tensor):
        self.at, self.x, self.y = set(at), x, y
        self.fit: dict[int, tuple[float, float]] = {}

    def after_step(self, run: Run) -> None:
        if run.step in self.at:
            self.fit[run.step] = training_set_fit(run.model, self.x, self.y)


def train_to_end(layers: int, lr: float, seed: int, *, kind: str = "plain", steps: int = 250,
                 batch_size: int = 256, momentum: float = 0.9, checkpoints: Sequence[float] = (0.8, 1.0),
                 width: int = 64) -> ScheduleEnd:
    """Train a :class:`ResidualMLP` on the digits through a whole learning-rate schedule.

    SGD with momentum on :func:`deepgrad.train.fit`, the rate following a cosine decay from ``lr``
    to 0 over ``steps`` steps, η_t = η (1 + cos(π t / T)) / 2 (Loshchilov & Hutter, 2017), so that
    the run ends with the rate at zero (He et al., 2016, instead divided theirs by ten twice and
    stopped at a hundredth of the initial rate). Seed ``seed`` fixes the initial weights and the
    order of the mini-batches. After the steps ``round(f · steps)`` for each fraction ``f`` in
    ``checkpoints`` (in (0, 1], increasing), the training loss and error are measured on the whole
    training set (:func:`training_set_fit`).
    A run whose loss stops being finite ends there, and its later checkpoints are NaN.
    """
    from deepgrad.repro import seed_everything
    from deepgrad.schedules import cosine_lr
    from deepgrad.train import LearningRate, fit

    positive_int("layers", layers, minimum=4)
    positive("lr", lr)
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    non_negative("momentum", momentum)
    fractions = [fraction(f"checkpoints[{i}]", f, open_high=False) for i, f in enumerate(checkpoints)]
    at = [max(1, round(f * steps)) for f in fractions]
    if not at or any(b <= a for a, b in zip(at, at[1:], strict=False)):
        raise ValueError(f"checkpoints must be increasing fractions in (0, 1] that fall on distinct steps "
                         f"of the {steps}, got {list(checkpoints)}")
    data = _digits()
    generator = seed_everything(seed)
    model = ResidualMLP.with_layers(data.n_features, data.n_classes, layers, kind=kind,
                                    width=width).to(data.train.x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    probe = _Checkpoints(at, data.train.x, data.train.y)
    history = fit(model, data, optimizer, steps=steps, batch_size=batch_size, generator=generator,
                  eval_every=steps, callbacks=[LearningRate(lambda k: cosine_lr(k, lr, steps)), probe])
    nan = (math.nan, math.nan)
    return ScheduleEnd(steps=tuple(at), loss=tuple(probe.fit.get(s, nan)[0] for s in at),
                       error=tuple(probe.fit.get(s, nan)[1] for s in at), diverged=history.diverged)


def gradient_correlations(model: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """Correlation of the input gradients of neighbouring inputs (Balduzzi et al., 2017).

    ``points`` is an ``(n, d)`` batch of inputs along a path (e.g. a 1-D grid). For the first output
    ``model(points)[:, 0]`` of every example, the gradient g_i = ∂ output_i / ∂ x_i is computed at
    every point. For ``d = 1`` the gradients are numbers, and the result is one value: their
    correlation at lag one, the Pearson correlation of (g_1, ..., g_{n-1}) with (g_2, ..., g_n),
    near 1 for a smooth function and near 0 for white noise. For ``d > 1`` it holds the ``n - 1``
    correlations between consecutive gradient vectors. Batch norm in training mode couples the
    examples of a batch: use :func:`freeze_batch_statistics` first.
    """
    if points.ndim != 2 or points.shape[0] < 3:
        raise ValueError(f"points must be an (n, d) tensor with n >= 3, got shape {tuple(points.shape)}")
    x = points.detach().clone().requires_grad_(True)
    out = model(x)[:, 0].sum()
    (g,) = torch.autograd.grad(out, x)
    g = g.double()
    if g.shape[1] == 1:
        s = g[:, 0]
        return torch.corrcoef(torch.stack([s[:-1], s[1:]]))[0, 1].reshape(1)
    a, b = g[:-1], g[1:]
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# ---------------------------------------------------------------------------------------------
# Width changes: zero-padding and projection shortcuts (He et al., 2016, options A, B and C)
# ---------------------------------------------------------------------------------------------

#: Shortcuts of a network whose width changes between stages, after He et al. (2016, "Deep residual
#: learning"): ``"pad"`` (their option A), ``"projection"`` (B) and ``"all-projections"`` (C).
SHORTCUTS = ("pad", "projection", "all-projections")
#: The shortcut of one block whose width may change: the parameter-free ``"pad"`` or a learned ``"projection"``.
BLOCK_SHORTCUTS = ("pad", "projection")


class PadShortcut(nn.Module):
    """The parameter-free shortcut ``x ↦ P x`` from ``in_features`` to ``out_features`` units.

    ``P`` is the ``out_features × in_features`` matrix with ones on its diagonal and zeros elsewhere
    (``torch.eye(out_features, in_features)``). Widening, it appends ``out_features - in_features``
    zeros to ``x``: option A of He et al. (2016, "Deep residual learning"), who only ever widen
    (their channels double where the resolution halves). Narrowing, which they never do, it keeps the
    first ``out_features`` units and drops the rest: the truncated units reach the next block through
    the branch alone. Equal widths give the identity. Either way ``P`` has all its singular values
    equal to 1, and ``Pᵀ`` (what the backward pass applies) keeps the first ``min(in, out)``
    coordinates of the gradient and drops or zero-pads the others.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)

    def matrix(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The matrix ``P`` (``out_features × in_features``)."""
        return torch.eye(self.out_features, self.in_features, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        extra = self.out_features - self.in_features
        return nn.functional.pad(x, (0, extra)) if extra >= 0 else x[..., :self.out_features]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ProjectionBlock(ResidualBlock):
    """A residual block from ``in_features`` to ``out_features`` units: ``x_{l+1} = W_s x_l + F_l(x_l)``.

    He et al. (2016, "Deep residual learning") match the shapes of shortcut and branch, where the
    width changes, with a shortcut matrix ``W_s``; its Jacobian is then

        ∂x_{l+1}/∂x_l = W_s + J_l,   J_l = ∂F_l/∂x_l,

    so the direct path of the gradient is multiplied by ``W_sᵀ`` instead of passing unchanged.
    ``shortcut="projection"`` makes ``W_s`` a learned bias-free linear map (their option B; PyTorch's
    default initialisation), ``shortcut="pad"`` the fixed zero-padding (or truncating) matrix ``P``
    of :class:`PadShortcut` (their option A). The branch F is that of :class:`ResidualBlock` (two
    linear layers, the first one changing the width), and so is ``kind``:

    - ``"pre"`` (He et al., 2016, identity mappings): ``x_{l+1} = W_s x_l + F_l(x_l)`` exactly;
    - ``"post"``: ``x_{l+1} = relu(S(x_l) + F_l(x_l))``, where a learned projection is followed by batch
      norm when ``norm=True``, ``S(x) = BN(W_s x)``, as every convolution of He et al. is (the ReLU
      after the sum multiplies the Jacobian by its slopes, as in :class:`ResidualBlock`).
    """

    def __init__(self, in_features: int, out_features: int, kind: str = "pre", *,
                 shortcut: str = "projection", norm: bool = True):
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        one_of("kind", kind, ("post", "pre"))
        one_of("shortcut", shortcut, BLOCK_SHORTCUTS)
        super().__init__(out_features, kind, norm=norm)
        self.in_features = in_features
        self.linear1 = nn.Linear(in_features, out_features)
        if kind == "pre":
            self.norm1 = _norm(in_features, norm)
        if shortcut == "pad":
            self.shortcut: nn.Module = PadShortcut(in_features, out_features)
        else:
            projection = nn.Linear(in_features, out_features, bias=False)
            self.shortcut = (nn.Sequential(projection, nn.BatchNorm1d(out_features))
                             if kind == "post" and norm else projection)
        self.shortcut_kind = shortcut

    def shortcut_matrix(self) -> Tensor:
        """``W_s``: the padding matrix ``P`` or the projection's weight (without the batch norm of "post")."""
        if isinstance(self.shortcut, PadShortcut):
            return self.shortcut.matrix(self.linear1.weight.dtype)
        linear = self.shortcut[0] if isinstance(self.shortcut, nn.Sequential) else self.shortcut
        return linear.weight.detach()

    def forward(self, x: Tensor) -> Tensor:
        total = self.shortcut(x) + self.branch(x)
        return torch.relu(total) if self.kind == "post" else total

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.width}, kind={self.kind!r}, "
                f"shortcut={self.shortcut_kind!r}")


class StagedResidualMLP(ResidualMLP):
    """A :class:`ResidualMLP` whose width changes from stage to stage: ``widths[0]``, ``widths[1]``, ...

    The stem maps the input to ``widths[0]``; each stage has ``blocks`` blocks of its width. The
    first block of a stage whose width differs from the previous one is a :class:`ProjectionBlock`,
    every other block a :class:`ResidualBlock` with the identity shortcut, as in He et al. (2016,
    "Deep residual learning"), whose options are the ``shortcut`` argument:

    - ``"pad"`` (A): zero-padding where the width grows (truncation where it shrinks, see
      :class:`PadShortcut`), no parameters;
    - ``"projection"`` (B): a learned ``W_s`` where the width changes, the identity elsewhere;
    - ``"all-projections"`` (C): a learned ``W_s`` on every block.

    The direct path from the top to the first block is the product of the blocks' shortcut matrices:
    with A or B, only the few at the stage changes. :attr:`n_layers` and :meth:`linear_layers` count
    the branches' layers, the stem and the output, not the projections, as He et al. count depth.
    """

    def __init__(self, in_features: int, out_features: int, *, widths: tuple[int, ...] = (16, 32, 64),
                 blocks: int = 3, kind: str = "pre", norm: bool = True, shortcut: str = "projection"):
        nn.Module.__init__(self)
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        if not (isinstance(widths, (tuple, list)) and widths):
            raise TypeError(f"widths must be a non-empty tuple of int, got {type(widths).__name__} {widths!r}")
        for width in widths:
            positive_int("widths", width)
        positive_int("blocks", blocks)
        one_of("kind", kind, ("post", "pre"))
        flag("norm", norm)
        one_of("shortcut", shortcut, SHORTCUTS)
        self.kind = kind
        self.widths = tuple(widths)
        self.shortcut = shortcut
        self.stem = nn.Linear(in_features, widths[0])
        self.stem_norm = _norm(widths[0], norm) if kind != "pre" else nn.Identity()
        stack: list[nn.Module] = []
        previous = widths[0]
        for width in widths:
            for _ in range(blocks):
                if shortcut == "all-projections" or width != previous:
                    block_shortcut = "pad" if shortcut == "pad" else "projection"
                    stack.append(ProjectionBlock(previous, width, kind, shortcut=block_shortcut, norm=norm))
                else:
                    stack.append(ResidualBlock(width, kind, norm=norm))
                previous = width
        self.blocks = nn.ModuleList(stack)
        self.final_norm = _norm(widths[-1], norm) if kind == "pre" else nn.Identity()
        self.output = nn.Linear(widths[-1], out_features)

    @classmethod
    def with_layers(cls, in_features: int, out_features: int, layers: int, *,
                    widths: tuple[int, ...] = (16, 32, 64), **kwargs) -> StagedResidualMLP:
        """The network with ``layers`` linear layers (projections not counted): ``layers = 2·blocks·stages + 2``."""
        positive_int("layers", layers, minimum=4)
        stages = len(widths) if isinstance(widths, (tuple, list)) else 1
        if (layers - 2) % (2 * max(stages, 1)):
            raise ValueError(f"layers must be 2·blocks·{stages} + 2 for {stages} stages "
                             f"(two per block plus the stem and the output), got {layers}")
        return cls(in_features, out_features, widths=widths, blocks=(layers - 2) // (2 * stages), **kwargs)

    @property
    def point_widths(self) -> list[int]:
        """Widths at the points of :func:`block_input_gradients`: every block's input, then the last block's output."""
        inputs = [block.in_features if isinstance(block, ProjectionBlock) else block.width for block in self.blocks]
        return [*inputs, self.blocks[-1].width]

    def projection_blocks(self) -> list[ProjectionBlock]:
        """The blocks whose shortcut is not the identity module (those at the stage changes, or all for C)."""
        return [block for block in self.blocks if isinstance(block, ProjectionBlock)]

    def direct_path(self) -> Tensor:
        """The product of the shortcut matrices from the first block to the top, ``W_s^(k) ⋯ W_s^(1)``.

        ``(last width) × widths[0]``, computed in float64 on the CPU; the batch norm of a "post"
        projection is not included.
        """
        product = torch.eye(self.widths[0], dtype=torch.float64)
        for block in self.projection_blocks():
            product = block.shortcut_matrix().to(product) @ product
        return product
