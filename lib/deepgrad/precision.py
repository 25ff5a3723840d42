"""Low-precision training: number formats, gradient underflow, loss scaling, simulated float16.

- :func:`describe` reads a format's limits from ``torch.finfo`` (and its smallest subnormal from the
  bit pattern 0…01); :func:`from_bits` derives the same limits from the numbers of exponent and
  mantissa bits, as IEEE 754 defines them (IEEE, 2019; bfloat16: Kalamkar et al., 2019);
- :func:`round_to` rounds a tensor to a narrower format and back; :func:`cast` does the same in the
  forward pass *and* to the gradient in the backward pass; :class:`SimulatedLinear` and
  :func:`simulate` use it to run a float32 network as mixed-precision float16 or bfloat16 would
  (Micikevicius et al., 2018): inputs, weights and outputs of every linear layer, and the gradients
  flowing back through them, rounded to the narrow format; master weights, the loss and the update
  stay in float32;
- :func:`deltas` collects the back-propagated gradients δ at every linear layer's output (through
  :class:`deepgrad.diagnostics.Recorder`), and :func:`fractions_below` measures how many of them a
  format cannot hold;
- :class:`LossScaler` is loss scaling written out, static or dynamic (Micikevicius et al., 2018),
  with the interface and the arithmetic of ``torch.amp.GradScaler``; :class:`ScaledLoss` and
  :class:`LossScaling` put it into :func:`deepgrad.train.loop`;
- :func:`train` is one training run at a chosen precision, a module-level function of the seed so
  that :func:`deepgrad.evidence.compare` can run it in worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import flag, floating_dtype, instance_of, non_negative, positive, positive_int
from deepgrad.diagnostics import Recorder
from deepgrad.train import Callback, Loss, Run

__all__ = [
    "FORMATS", "Format", "LossScaler", "LossScaling", "ScaledLoss", "SimulatedLinear", "Trained", "amp_steps",
    "cast", "deltas", "describe", "fractions_below", "from_bits", "gradient_error", "round_to", "simulate",
    "smallest_subnormal", "train",
]

#: The three formats of the chapter, widest first.
FORMATS = (torch.float32, torch.float16, torch.bfloat16)
_INT_OF = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
           torch.bfloat16: torch.int16}


# ----------------------------------------------------------------------------------------------
# Number formats
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """The limits of a binary floating-point format (all as Python floats)."""

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int    # stored fraction bits; the precision is mantissa_bits + 1 with the hidden bit
    max: float            # largest finite number, (2 − 2^−m) · 2^emax
    smallest_normal: float  # 2^emin, emin = 2 − 2^(e−1)
    smallest_subnormal: float  # 2^(emin − m)
    eps: float            # machine epsilon, the gap between 1 and the next number: 2^−m


def smallest_subnormal(dtype: torch.dtype) -> float:
    """The smallest positive number of ``dtype``: the bit pattern 0…01 read as that format."""
    floating_dtype("dtype", dtype)
    if dtype not in _INT_OF:
        raise ValueError(f"dtype must be one of {list(_INT_OF)}, got {dtype}")
    return float(torch.ones((), dtype=_INT_OF[dtype]).view(dtype))


def describe(dtype: torch.dtype) -> Format:
    """The limits of ``dtype`` as PyTorch reports them (``torch.finfo``), smallest subnormal from its bits."""
    floating_dtype("dtype", dtype)
    info = torch.finfo(dtype)
    mantissa = round(-math.log2(info.eps))
    return Format(name=str(dtype).removeprefix("torch."), bits=info.bits,
                  exponent_bits=info.bits - 1 - mantissa, mantissa_bits=mantissa, max=float(info.max),
                  smallest_normal=float(info.smallest_normal), smallest_subnormal=smallest_subnormal(dtype),
                  eps=float(info.eps))


def from_bits(exponent_bits: int, mantissa_bits: int, name: str = "") -> Format:
    """The limits of an IEEE 754 binary format with ``exponent_bits`` e and ``mantissa_bits`` m (IEEE, 2019).

    The exponent field is biased by 2^(e−1) − 1; its all-ones value is kept for inf and NaN and its
    all-zeros value for zero and the subnormals, so normal numbers have exponents from
    emin = 2 − 2^(e−1) to emax = 2^(e−1) − 1. Then

    - largest finite: (2 − 2^−m) · 2^emax (all mantissa bits set);
    - smallest normal: 2^emin; smallest subnormal: 2^(emin − m) (only the last mantissa bit set);
    - machine epsilon: 2^−m, the gap between 1 and the next number.
    """
    positive_int("exponent_bits", exponent_bits, minimum=2)
    positive_int("mantissa_bits", mantissa_bits)
    emax = 2 ** (exponent_bits - 1) - 1
    emin = 1 - emax
    return Format(name=name, bits=1 + exponent_bits + mantissa_bits, exponent_bits=exponent_bits,
                  mantissa_bits=mantissa_bits, max=math.ldexp(2 - 2.0 ** -mantissa_bits, emax),
                  smallest_normal=math.ldexp(1.0, emin), smallest_subnormal=math.ldexp(1.0, emin - mantissa_bits),
                  eps=2.0 ** -mantissa_bits)


# ----------------------------------------------------------------------------------------------
# Rounding, forward and backward
# ----------------------------------------------------------------------------------------------

def round_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` rounded to ``dtype`` (round to nearest, ties to even) and returned in its own type.

    Values beyond the format's largest finite number become ±inf; those below half its smallest
    subnormal become ±0, and so does exactly half of it (a tie, rounded to the even neighbour, 0).
    """
    instance_of("x", x, Tensor, "a torch.Tensor")
    floating_dtype("dtype", dtype)
    return x.to(dtype).to(x.dtype)


class _Cast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.dtype = dtype
        return round_to(x, dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return round_to(grad, ctx.dtype), None


def cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` rounded to ``dtype`` in the forward pass; the gradient flowing back through it rounded too.

    This is what a tensor stored in ``dtype`` does to both passes, simulated in ``x``'s own type: the
    forward value can overflow to ±inf or flush to 0, and so can the gradient.
    """
    instance_of("x", x, Tensor, "a torch.Tensor")
    floating_dtype("dtype", dtype)
    return _Cast.apply(x, dtype)


class SimulatedLinear(nn.Linear):
    """An ``nn.Linear`` that computes as under mixed precision in ``dtype``, in float32 arithmetic.

    Forward: ``cast(F.linear(cast(x), cast(W), cast(b)))``: input, weight, bias and output rounded to
    ``dtype``, the products summed in float32 (as tensor cores and CPU kernels accumulate). Backward:
    the gradient at the output is rounded, and so are the gradients to the input, the weight and the
    bias, as when they are computed in ``dtype``. The parameters themselves stay float32 (the master
    weights), so an update smaller than ``dtype``'s resolution is not lost.
    """

    dtype: torch.dtype

    @classmethod
    def from_linear(cls, layer: nn.Linear, dtype: torch.dtype) -> SimulatedLinear:
        """A simulated layer sharing ``layer``'s parameters (the same ``nn.Parameter`` objects)."""
        instance_of("layer", layer, nn.Linear, "an nn.Linear")
        floating_dtype("dtype", dtype)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight = layer.weight
        new.bias = layer.bias
        new.dtype = dtype
        return new

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else cast(self.bias, self.dtype)
        return cast(F.linear(cast(x, self.dtype), cast(self.weight, self.dtype), bias), self.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", simulated={str(self.dtype).removeprefix('torch.')}"


def simulate(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`SimulatedLinear` in ``dtype``, in place.

    The parameters are kept (an optimiser built before still holds them); returns ``model``.
    ``dtype=torch.float32`` leaves it unchanged.
    """
    instance_of("model", model, nn.Module, "a torch.nn.Module")
    floating_dtype("dtype", dtype)
    if dtype == torch.float32:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not isinstance(child, SimulatedLinear):
                setattr(parent, name, SimulatedLinear.from_linear(child, dtype))
    return model


# ----------------------------------------------------------------------------------------------
# Measuring underflow
# ----------------------------------------------------------------------------------------------

def deltas(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Loss = F.cross_entropy) -> list[Tensor]:
    """The back-propagated gradients δ_l = ∂L/∂z_l at the output z_l of every ``nn.Linear``, input side first.

    One forward and backward pass of ``loss_fn(model(x), y)`` (the mean over the batch, so δ carries
    the factor 1/batch that training stores); the hooks go through
    :class:`deepgrad.diagnostics.Recorder`, and the parameters' ``.grad`` are left as they were.
    """
    instance_of("model", model, nn.Module, "a torch.nn.Module")
    kept: list[Tensor] = []
    with Recorder(model, statistics=False) as rec:
        for _, module in rec.modules:
            rec.on_forward(module, lambda module, inputs, output: kept.append(output))
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, kept)
    return [g.detach() for g in grads]


def fractions_below(values: Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """Of the non-zero entries of ``values``: the fraction below ``dtype``'s smallest subnormal and the
    fraction below its smallest normal (in magnitude). Exact zeros (a ReLU's) are left out; ``nan`` if
    there is no non-zero entry."""
    instance_of("values", values, Tensor, "a torch.Tensor")
    fmt = describe(dtype)
    magnitude = values.detach().abs().double()
    magnitude = magnitude[magnitude != 0]
    if magnitude.numel() == 0:
        return math.nan, math.nan
    return (float((magnitude < fmt.smallest_subnormal).double().mean()),
            float((magnitude < fmt.smallest_normal).double().mean()))


# ----------------------------------------------------------------------------------------------
# Loss scaling
# ----------------------------------------------------------------------------------------------

def _float32(value: float) -> float:
    """``value`` rounded to float32 once (as a C++ ``static_cast<float>`` of a double)."""
    return float(torch.tensor(value, dtype=torch.float64).float())


class LossScaler:
    """Loss scaling (Micikevicius et al., 2018), static or dynamic, with ``torch.amp.GradScaler``'s interface.

    Multiply the loss by S before the backward pass, so that every gradient is S times larger and
    small ones stay above the narrow format's underflow; divide the gradients by S before the update.
    One step, as with ``GradScaler``::

        scaler.scale(loss).backward()   # gradients of S·L
        scaler.unscale_(optimizer)      # g ← g · (1/S); any inf or NaN? (optional: clip after this)
        scaler.step(optimizer)          # the update, skipped if a gradient was inf or NaN
        scaler.update()                 # the next S

    Dynamic (``dynamic=True``): a step with an inf/NaN gradient is skipped and S ← S · backoff_factor;
    after ``growth_interval`` finite steps in a row, S ← S · growth_factor (if that is finite). Static:
    S stays ``init_scale``; steps with an inf/NaN gradient are still skipped. The scale is a float32
    number, each change rounded to float32 once, and 1/S is float32(1 / S), as in ``GradScaler``.
    ``scales`` holds S after every update, ``skipped`` the (1-based) steps that were skipped.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, *, dynamic: bool = True):
        self._scale = _float32(positive("init_scale", init_scale))
        self.growth_factor = positive("growth_factor", growth_factor)
        self.backoff_factor = positive("backoff_factor", backoff_factor)
        if dynamic and not growth_factor > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if dynamic and not backoff_factor < 1:
            raise ValueError(f"backoff_factor must be < 1, got {backoff_factor}")
        self.growth_interval = positive_int("growth_interval", growth_interval)
        self.dynamic = flag("dynamic", dynamic)
        self._tracker = 0          # finite steps since the last change of S
        self._found_inf: bool | None = None  # None: this step's gradients not unscaled yet
        self.scales: list[float] = []
        self.skipped: list[int] = []

    def get_scale(self) -> float:
        """The current scale S."""
        return self._scale

    @property
    def found_inf(self) -> bool:
        """Whether this step's gradients held an inf or NaN (after :meth:`unscale_`)."""
        return bool(self._found_inf)

    def scale(self, loss: Tensor) -> Tensor:
        """``loss · S`` (S as a float32 tensor on the loss's device)."""
        instance_of("loss", loss, Tensor, "a torch.Tensor")
        return loss * torch.tensor(self._scale, dtype=torch.float32, device=loss.device)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient of ``optimizer``'s parameters by S, in place, noting any inf or NaN.

        Each gradient is multiplied by float32(1/S); whether it was finite is judged before that.
        Once per step: clip the gradients after this call, never before.
        """
        if self._found_inf is not None:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        inverse = math.inf if self._scale == 0 else _float32(1.0 / self._scale)
        found = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    found = found or not bool(torch.isfinite(p.grad).all())
                    if inverse != 1.0:
                        p.grad.mul_(inverse)
        self._found_inf = found

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` unless a gradient was inf or NaN (unscaling first if not done yet)."""
        if self._found_inf is None:
            self.unscale_(optimizer)
        if not self._found_inf:
            optimizer.step()

    def update(self) -> None:
        """The scale for the next step (dynamic: back off after an inf/NaN, grow after a run of finite steps)."""
        if self._found_inf is None:
            raise RuntimeError("update() needs this step's gradients unscaled first (unscale_() or step())")
        if self._found_inf:
            self.skipped.append(len(self.scales) + 1)
        if self.dynamic:
            if self._found_inf:
                self._scale = _float32(self._scale * self.backoff_factor)
                self._tracker = 0
            else:
                self._tracker += 1
                if self._tracker == self.growth_interval:
                    grown = _float32(self._scale * self.growth_factor)
                    if math.isfinite(grown):
                        self._scale = grown
                    self._tracker = 0
        self.scales.append(self._scale)
        self._found_inf = None


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class ScaledLoss:
    """A loss function for :func:`deepgrad.train.fit`/``loop`` whose *gradient* is scaled by the scaler's S.

    Its value is ``loss_fn(logits, y)`` unchanged (so the training history records the true loss), and
    the backward pass starts from S instead of 1: the same gradients, bit for bit, as
    ``scaler.scale(loss).backward()``.
    """

    def __init__(self, scaler: LossScaler, loss_fn: Loss = F.cross_entropy):
        self.scaler = instance_of("scaler", scaler, LossScaler, "a LossScaler")
        self.loss_fn = loss_fn

    def __call__(self, logits: Tensor, y: Tensor) -> Tensor:
        loss = self.loss_fn(logits, y)
        if not torch.is_grad_enabled():
            return loss
        scale = torch.tensor(self.scaler.get_scale(), dtype=torch.float32, device=loss.device)
        return _ScaleGradient.apply(loss, scale)


class LossScaling(Callback):
    """The scaler's step in :func:`deepgrad.train.loop`: after the backward pass, unscale (then clip at
    ``max_grad_norm``, if given, in that order); a step with an inf/NaN gradient is skipped, as
    ``GradScaler.step`` skips it: the loop is told (``run.skip_update``) and makes no
    ``optimizer.step()``, and the non-finite gradients are dropped (``p.grad = None``) so that no later
    callback reads them; after the step, :meth:`LossScaler.update`. Use it with :class:`ScaledLoss` as
    the loss function, and clip here, not with ``fit(max_grad_norm=...)``, which would clip the
    still-scaled gradients.

    A skipped step counts in ``History.skipped``, not in ``History.updates`` (the updates applied); the
    scaler's ``skipped`` lists the steps that made no update.
    """

    def __init__(self, scaler: LossScaler, max_grad_norm: float | None = None):
        self.scaler = instance_of("scaler", scaler, LossScaler, "a LossScaler")
        self.max_grad_norm = None if max_grad_norm is None else non_negative("max_grad_norm", max_grad_norm)

    def after_backward(self, run: Run) -> None:
        self.scaler.unscale_(run.optimizer)
        if self.scaler.found_inf:
            run.skip_update = True
            for group in run.optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        elif self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), self.max_grad_norm)

    def after_step(self, run: Run) -> None:
        self.scaler.update()


def amp_steps(scaler, model: nn.Module, optimizer: torch.optim.Optimizer, batches,
              loss_fn: Loss = F.cross_entropy, *, max_grad_norm: float | None = None) -> list[float]:
    """Steps in the recipe of ``torch.amp``'s documentation, for any scaler with ``GradScaler``'s interface.

    For each ``(x, y)`` of ``batches``: zero the gradients, ``scaler.scale(loss).backward()``,
    ``scaler.unscale_(optimizer)``, clip at ``max_grad_norm`` if given (after unscaling),
    ``scaler.step(optimizer)``, ``scaler.update()``. Returns the scale after every step. It is the
    harness that compares :class:`LossScaler` with ``torch.amp.GradScaler`` step for step; training
    in the book goes through :func:`deepgrad.train.loop` with :class:`LossScaling`.
    """
    scales = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_fn(model(x), y)).backward()
        scaler.unscale_(optimizer)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scales.append(float(scaler.get_scale()))
    return scales


# ----------------------------------------------------------------------------------------------
# One run at a chosen precision (module level, for deepgrad.evidence.compare's workers)
# ----------------------------------------------------------------------------------------------

@dataclass
class Trained:
    """What :func:`train` returns with ``result="run"``: the history, the scaler (or None) and the model."""

    history: object
    scaler: LossScaler | None
    model: nn.Module


def train(seed: int, *, dtype: torch.dtype = torch.float32, scaling: str = "none", depth: int = 4,
          width: int = 64, init: str | None = "he_normal", steps: int = 100, lr: float = 0.01,
          loss_factor: float = 1.0, batch_size: int = 64, init_scale: float = 2.0 ** 16,
          growth_interval: int = 100, eval_every: int | None = None,
          result: str = "val_loss") -> float | Trained:
    """Train ``dg.models.mlp_for(digits, depth, width, init, seed=seed)`` with SGD (momentum 0.9) for
    ``steps`` steps in ``dtype`` (simulated with :func:`simulate` unless float32); return ``result``.

    ``scaling`` is ``"none"`` or ``"dynamic"`` (a :class:`LossScaler` from ``init_scale`` with
    ``growth_interval``). The model is evaluated on the validation split every ``eval_every`` steps
    (default: ``steps // 20``). ``loss_factor`` multiplies the loss (and the learning rate is divided by it,
    so that in exact arithmetic the run does not change). ``result``: ``"val_loss"`` (the final
    validation loss, the loss factor divided out), ``"val_accuracy"``, or ``"run"`` (a :class:`Trained`).
    """
    from deepgrad import data, models, repro
    from deepgrad import train as training

    if scaling not in ("none", "dynamic"):
        raise ValueError(f"scaling must be one of 'none', 'dynamic'; got {scaling!r}")
    if result not in ("val_loss", "val_accuracy", "run"):
        raise ValueError(f"result must be one of 'val_loss', 'val_accuracy', 'run'; got {result!r}")
    positive("loss_factor", loss_factor)
    digits = data.load_digits()
    model = simulate(models.mlp_for(digits, depth=depth, width=width, init=init, seed=seed), dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr / loss_factor, momentum=0.9)

    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y) * loss_factor

    scaler = None
    callbacks: list[Callback] = []
    if scaling == "dynamic":
        scaler = LossScaler(init_scale, growth_interval=growth_interval)
        callbacks.append(LossScaling(scaler))
    history = training.fit(model, digits, optimizer, steps=steps, batch_size=batch_size,
                           loss_fn=loss_fn if scaler is None else ScaledLoss(scaler, loss_fn),
                           generator=repro.seed_everything(seed), callbacks=callbacks, eval_every=eval_every)
    if result == "run":
        return Trained(history, scaler, model)
    if history.diverged:
        return math.nan
    final = getattr(history, result)[-1]
    return final / loss_factor if result == "val_loss" else final


def gradient_error(seed: int, *, dtype: torch.dtype, depth: int = 4, width: int = 64,
                   init: str | None = "he_normal", batch_size: int = 64, loss_scale: float = 1.0) -> float:
    """‖g_dtype − g_32‖ / ‖g_32‖ over all parameters: how far the gradient of one mini-batch computed in
    simulated ``dtype`` (with the loss scaled by ``loss_scale`` and the gradient unscaled) is from float32's.

    The network is ``mlp_for(digits, depth, width, init, seed=seed)``; the batch the first
    ``batch_size`` training examples of a permutation drawn with ``seed``. ``loss_scale`` must be > 0.
    """
    from deepgrad import data, models

    positive("loss_scale", loss_scale)

    digits = data.load_digits()
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    x, y = digits.train.x[order], digits.train.y[order]
    grads = []
    for kind in (torch.float32, dtype):
        model = simulate(models.mlp_for(digits, depth=depth, width=width, init=init, seed=seed), kind)
        scale = 1.0 if kind == torch.float32 else loss_scale
        loss = F.cross_entropy(model(x), y) * scale
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]) / scale)
    reference, low = (g.double() for g in grads)
    return float(torch.linalg.vector_norm(low - reference) / torch.linalg.vector_norm(reference))
