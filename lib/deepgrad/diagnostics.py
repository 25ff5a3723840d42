"""Per-layer gradient and activation statistics, collected with hooks from any ``nn.Module``.

Two kinds of gradient tell different stories (Glorot & Bengio, 2010) and the book measures both:

- the *weight gradient* ∂L/∂W of a layer, what the optimiser uses to update it;
- the *back-propagated gradient* ∂L/∂(output of the layer), what flows on towards the input.

:class:`Recorder` attaches forward hooks to chosen modules; each records its output's mean and
standard deviation and registers a tensor hook that records the norm of the gradient flowing back
into that output. :func:`probe` runs one forward/backward pass under a recorder and returns one
:class:`LayerStats` per linear layer. Non-finite values are recorded as they are (``nan``/``inf``),
never raised.

:class:`GradientReport` watches a model over a few training steps and gives a verdict (healthy,
vanishing below some layer, exploding) with the evidence: per-layer back-propagated and weight
gradients, update-to-weight ratios, activation statistics, saturated and dead units.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import one_of


@dataclass
class ModuleRecord:
    """What one :class:`Recorder` saw at one module during the last forward/backward pass."""

    name: str
    output_mean: float = math.nan
    output_std: float = math.nan
    output_grad_norm: float = math.nan  # ‖∂L/∂output‖ over the whole batch
    calls: int = 0  # forward calls seen; with weight sharing, the statistics are the last call's


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one linear layer after a forward and backward pass."""

    name: str
    weight_norm: float         # ‖W‖_F
    weight_grad_norm: float    # ‖∂L/∂W‖_F
    output_grad_norm: float    # ‖∂L/∂z‖_F, the back-propagated gradient at the layer's output z
    output_mean: float         # mean of z over batch and units
    output_std: float          # std of z over batch and units


def _as_float(t: Tensor) -> float:
    return float(t.detach().double())


class Recorder:
    """Context manager recording output statistics and output-gradient norms of selected modules.

    ``select`` is a module type, a tuple of types, or a predicate ``(name, module) -> bool``;
    by default every ``nn.Linear``. Hooks are removed on exit. Use it around a forward and a
    backward pass::

        with Recorder(model) as rec:
            F.cross_entropy(model(x), y).backward()
        rec.records  # {name: ModuleRecord}
    """

    def __init__(self, model: nn.Module,
                 select: type | tuple[type, ...] | Callable[[str, nn.Module], bool] = nn.Linear):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(select, (type, tuple)):
            types = select
            select = lambda name, module: isinstance(module, types)  # noqa: E731
        elif not callable(select):
            raise TypeError(f"select must be a module type, a tuple of types or a predicate, got {select!r}")
        self.model = model
        self.modules = [(name, m) for name, m in model.named_modules() if name and select(name, m)]
        self.records: dict[str, ModuleRecord] = {name: ModuleRecord(name) for name, _ in self.modules}
        self.call_order: list[str] = []  # names in the order the forward pass first reached them
        self._handles: list = []

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, Tensor):
                return
            rec = self.records[name]
            if rec.calls == 0:
                self.call_order.append(name)
            rec.calls += 1
            out = output.detach()
            rec.output_mean = _as_float(out.mean())
            rec.output_std = _as_float(out.std()) if out.numel() > 1 else 0.0
            if output.requires_grad:
                output.register_hook(self._grad_hook(name))
        return hook

    def _grad_hook(self, name: str):
        def hook(grad):
            self.records[name].output_grad_norm = _as_float(torch.linalg.vector_norm(grad))
        return hook

    def __enter__(self) -> Recorder:
        self._handles = [m.register_forward_hook(self._forward_hook(name)) for name, m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def weight_gradient_norms(model: nn.Module) -> dict[str, float]:
    """‖∂L/∂W‖_F of every ``nn.Linear`` after a backward pass (``nan`` where there is no gradient)."""
    return {
        name: math.nan if m.weight.grad is None else _as_float(torch.linalg.vector_norm(m.weight.grad))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    }


def probe(model: nn.Module, x: Tensor, y: Tensor,
          loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> list[LayerStats]:
    """One forward and backward pass on ``(x, y)``; one :class:`LayerStats` per ``nn.Linear``.

    Layers come in the order the forward pass reached them (input side first), whatever the order
    in which the model registered them; layers the pass never reached come last, with ``nan``.
    The model's gradients are zeroed first and left holding this batch's gradients afterwards;
    parameters are not changed (normalisation layers in training mode do update running statistics).
    """
    model.zero_grad(set_to_none=True)
    with Recorder(model, nn.Linear) as rec:
        loss_fn(model(x), y).backward()
    grads = weight_gradient_norms(model)
    linear = dict(rec.modules)
    order = rec.call_order + [name for name in rec.records if name not in rec.call_order]
    return [
        LayerStats(
            name=r.name,
            weight_norm=_as_float(torch.linalg.vector_norm(linear[r.name].weight)),
            weight_grad_norm=grads[r.name],
            output_grad_norm=r.output_grad_norm,
            output_mean=r.output_mean,
            output_std=r.output_std,
        )
        for r in (rec.records[name] for name in order)
    ]


# --------------------------------------------------------------------------------------------
# GradientReport: a verdict on gradient health, with its evidence
# --------------------------------------------------------------------------------------------

#: Activation modules whose outputs the report inspects, and the slope each has as a function of
#: its *output* a (so no pre-activation is needed): σ' = a(1 − a) ≤ 1/4, tanh' = 1 − a² ≤ 1.
_SATURATING: dict[type, tuple[Callable[[Tensor], Tensor], float]] = {
    nn.Sigmoid: (lambda a: a * (1 - a), 0.25),
    nn.Tanh: (lambda a: 1 - a * a, 1.0),
}
#: Activations whose units can die (output exactly 0 for every input).
_RECTIFIERS = (nn.ReLU, nn.ReLU6)

VERDICTS = ("healthy", "vanishing", "exploding", "no data")


@dataclass(frozen=True)
class LayerHealth:
    """One weight-bearing layer's statistics over the watched steps (medians over steps).

    ``output_grad_rms`` is the root-mean-square of the back-propagated gradient ∂L/∂(output) per
    element, so that layers of different widths compare fairly; ``relative_grad`` divides it by the
    reference layer's (see :class:`GradientReport`). ``update_ratio`` is ‖ΔW‖/‖W‖ per step.
    ``saturated`` is the fraction of a following sigmoid/tanh's outputs whose slope is below
    ``saturation`` × its maximum slope; ``dead`` the fraction of a following ReLU's units that were
    zero for every example of every watched step. Either is ``nan`` where it does not apply.
    """

    index: int
    name: str
    weight_grad_norm: float
    output_grad_rms: float
    relative_grad: float
    update_ratio: float
    output_mean: float
    output_std: float
    activation: str | None
    saturated: float
    dead: float
    finite: bool


@dataclass(frozen=True)
class Verdict:
    """The report's conclusion: ``kind`` is one of :data:`VERDICTS`.

    For ``"vanishing"``, ``layer`` is the highest layer (1 = nearest the input) whose back-propagated
    gradient is below the threshold; every layer from there down is starved.
    """

    kind: str
    layer: int | None
    evidence: str

    @property
    def headline(self) -> str:
        """``"healthy"``, ``"exploding"``, ``"no data"`` or ``"vanishing at layer k and below"``
        (``"vanishing at layer 1"`` when only the lowest layer is affected)."""
        if self.kind != "vanishing":
            return self.kind
        return "vanishing at layer 1" if self.layer == 1 else f"vanishing at layer {self.layer} and below"

    def __str__(self) -> str:
        return textwrap.fill(f"{self.headline}: {self.evidence}", width=78, subsequent_indent="  ")


def _summary(values: list[float]) -> float:
    """Median of per-step values; the first non-finite one if any (so ``inf`` stays visible)."""
    if not values:
        return math.nan
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return bad[0]
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _owns_weight_matrix(name: str, module: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in module.parameters(recurse=False))


class _LayerLog:
    """Per-step measurements of one layer, appended by the hooks."""

    def __init__(self, name: str, weights: list[nn.Parameter]):
        self.name = name
        self.weights = weights
        self.grad_sq: dict[int, list[float]] = {}  # step -> squared grad norms of each weight parameter
        self.output_grad_rms: list[float] = []
        self.update_ratio: list[float] = []
        self.output_mean: list[float] = []
        self.output_std: list[float] = []
        self.snapshot: Tensor | None = None
        self.activation: str | None = None
        self.saturated: list[float] = []
        self.ever_active: Tensor | None = None  # per unit, for rectifiers

    def flat_weights(self) -> Tensor:
        return torch.cat([w.detach().reshape(-1) for w in self.weights]).double()

    def weight_grad_norms(self) -> list[float]:
        return [math.sqrt(sum(parts)) for _, parts in sorted(self.grad_sq.items())]


def _ratio(a: float, b: float) -> float:
    """a / b, with a zero denominator giving ``inf`` (or ``nan`` for 0 / 0) instead of an error."""
    if b == 0:
        return math.nan if a == 0 else math.inf
    return a / b


class GradientReport:
    """Watch a model for a few training steps; say whether its gradients vanish, explode or are healthy.

    Use it around any training loop (or :func:`deepgrad.train.fit`)::

        with GradientReport(model) as report:
            for x, y in some_batches:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
        print(report)            # a per-layer table and the verdict
        report.verdict.kind      # "healthy", "vanishing", "exploding" or "no data"

    Layers are the modules that own a weight matrix (a parameter with two or more dimensions:
    ``nn.Linear``, convolutions, recurrent layers, embeddings...), or those chosen by ``select``
    (a predicate ``(name, module) -> bool``), numbered in the order the forward pass reaches them.
    ``nn.Sigmoid``/``nn.Tanh``/``nn.ReLU`` modules are attributed to the layer that ran just before
    them; activations applied as functions inside ``forward`` are invisible to the report.

    Two gradients are measured per layer, because they can disagree (Glorot & Bengio, 2010): the
    weight gradient ‖∂L/∂W‖ can stay level across layers while the back-propagated gradient
    ∂L/∂(output) shrinks. The verdict uses the back-propagated one, which is what reaches the lower
    layers. Its RMS is compared with the *reference layer's*: the last layer that is not the output
    layer (the loss itself sets the output layer's scale), or the last layer if there are only two.

    - **vanishing** if some layer's ratio is below ``vanishing_below`` (default 1/100);
    - **exploding** if some ratio exceeds ``exploding_above`` (default 100), a weight moves by more
      than its own norm in one step (update ratio > 1), or any statistic is ``nan``/``inf``;
    - **healthy** otherwise; **no data** if no layer or no backward pass was seen.

    Only passes with gradients enabled are recorded (evaluation under ``torch.no_grad`` is ignored).
    Update ratios compare the weights seen by consecutive forward passes, so they work with any
    optimiser (with gradient accumulation, passes without an update in between count as zero updates).
    Nothing raises on non-finite values; they are reported.
    """

    def __init__(self, model: nn.Module, *, select: Callable[[str, nn.Module], bool] | None = None,
                 vanishing_below: float = 1e-2, exploding_above: float = 1e2, saturation: float = 0.1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if select is not None and not callable(select):
            raise TypeError(f"select must be None or a predicate (name, module) -> bool, got {select!r}")
        for arg, value in (("vanishing_below", vanishing_below), ("saturation", saturation)):
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"{arg} must be a number in (0, 1), got {value!r}")
        if not (isinstance(exploding_above, (int, float)) and 1 < exploding_above < math.inf):
            raise ValueError(f"exploding_above must be a finite number > 1, got {exploding_above!r}")
        self.model = model
        self.vanishing_below = float(vanishing_below)
        self.exploding_above = float(exploding_above)
        self.saturation = float(saturation)
        select = select or _owns_weight_matrix
        # the model itself counts too (a bare nn.LSTM, say), shown under its class name
        self._modules = {name: m for name, m in model.named_modules() if select(name, m)}
        self._logs = {
            name: _LayerLog(name or type(m).__name__, [p for p in m.parameters(recurse=False) if p.ndim >= 2])
            for name, m in self._modules.items()
        }
        self._activations = [(name, m) for name, m in model.named_modules()
                             if isinstance(m, (*_SATURATING, *_RECTIFIERS))]
        self._order: list[str] = []       # layers in forward order
        self._last_layer: str | None = None
        self._handles: list = []

    # -- hooks ---------------------------------------------------------------------------------
    def _layer_pre_hook(self, name: str):
        def hook(module, inputs):
            if not torch.is_grad_enabled():
                return
            self._record_update(self._logs[name])
        return hook

    def _record_update(self, log: _LayerLog) -> bool:
        current = log.flat_weights()
        changed = False
        if log.snapshot is not None:
            delta = current - log.snapshot
            changed = bool(torch.any(delta != 0))
            log.update_ratio.append(_as_float(torch.linalg.vector_norm(delta) / torch.linalg.vector_norm(log.snapshot)))
        log.snapshot = current.clone()
        return changed

    def _layer_hook(self, name: str):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return
            out = output[0] if isinstance(output, tuple) else output
            if not isinstance(out, Tensor) or not out.is_floating_point():
                return
            log = self._logs[name]
            if name not in self._order:
                self._order.append(name)
            self._last_layer = name
            detached = out.detach()
            log.output_mean.append(_as_float(detached.mean()))
            log.output_std.append(_as_float(detached.std()) if detached.numel() > 1 else 0.0)
            if out.requires_grad:
                out.register_hook(self._output_grad_hook(log))
        return hook

    def _output_grad_hook(self, log: _LayerLog):
        def hook(grad):
            rms = torch.linalg.vector_norm(grad.double()) / math.sqrt(max(grad.numel(), 1))
            log.output_grad_rms.append(_as_float(rms))
        return hook

    def _weight_grad_hook(self, log: _LayerLog, index: int):
        def hook(param):
            sq = _as_float(torch.linalg.vector_norm(param.grad.double()) ** 2)
            # a new entry per backward pass; parts of one layer (e.g. an LSTM's matrices) share it
            step = len(log.output_grad_rms) if log.output_grad_rms else len(log.grad_sq)
            log.grad_sq.setdefault(step, []).append(sq)
        return hook

    def _activation_hook(self, module_type: type):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled() or self._last_layer is None or not isinstance(output, Tensor):
                return
            log = self._logs[self._last_layer]
            log.activation = module_type.__name__
            out = output.detach().double()
            if module_type in _SATURATING:
                slope, top = _SATURATING[module_type]
                log.saturated.append(_as_float((slope(out) < self.saturation * top).double().mean()))
            else:
                units = out.transpose(0, 1).reshape(out.shape[1], -1) if out.ndim >= 2 else out[:, None]
                active = (units > 0).any(dim=1)
                log.ever_active = active if log.ever_active is None else log.ever_active | active
        return hook

    def _reset_pass(self, module, inputs) -> None:
        self._last_layer = None  # an activation before the first layer belongs to no layer

    def __enter__(self) -> GradientReport:
        self._handles.append(self.model.register_forward_pre_hook(self._reset_pass))
        for name, module in self._modules.items():
            log = self._logs[name]
            self._handles.append(module.register_forward_pre_hook(self._layer_pre_hook(name)))
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))
            for i, w in enumerate(log.weights):
                self._handles.append(w.register_post_accumulate_grad_hook(self._weight_grad_hook(log, i)))
        for _, module in self._activations:
            kind = next(t for t in (*_SATURATING, *_RECTIFIERS) if isinstance(module, t))
            self._handles.append(module.register_forward_hook(self._activation_hook(kind)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        # the last step's update happened after the last forward pass: count it if weights moved
        for log in self._logs.values():
            if log.snapshot is not None:
                before = list(log.update_ratio)
                if not self._record_update(log):
                    log.update_ratio = before

    # -- results -------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Number of backward passes observed."""
        return max((len(log.output_grad_rms) for log in self._logs.values()), default=0)

    #: Statistics :meth:`trace` can return, step by step.
    TRACEABLE = ("weight_grad_norm", "output_grad_rms", "update_ratio", "output_mean", "output_std", "saturated")

    def trace(self, statistic: str) -> list[list[float]]:
        """Every recorded value of ``statistic`` (one of :attr:`TRACEABLE`): one list per layer, one
        entry per step, layers in forward order. The table and the verdict use these lists' medians."""
        one_of("statistic", statistic, self.TRACEABLE)
        logs = [self._logs[name] for name in self._order]
        if statistic == "weight_grad_norm":
            return [log.weight_grad_norms() for log in logs]
        return [list(getattr(log, statistic)) for log in logs]

    def _reference(self) -> int:
        return len(self._order) - 2 if len(self._order) >= 3 else len(self._order) - 1

    @property
    def layers(self) -> list[LayerHealth]:
        """One :class:`LayerHealth` per layer reached by a recorded forward pass, input side first."""
        logs = [self._logs[name] for name in self._order]
        grads = [_summary(log.output_grad_rms) for log in logs]
        ref = grads[self._reference()] if logs else math.nan
        rows = []
        for i, (log, g) in enumerate(zip(logs, grads, strict=True)):
            stats = [_summary(log.weight_grad_norms()), g, _summary(log.update_ratio),
                     _summary(log.output_mean), _summary(log.output_std)]
            dead = math.nan if log.ever_active is None else 1 - _as_float(log.ever_active.double().mean())
            rows.append(LayerHealth(
                index=i + 1, name=log.name, weight_grad_norm=stats[0], output_grad_rms=g,
                relative_grad=g / ref if ref else math.inf, update_ratio=stats[2],
                output_mean=stats[3], output_std=stats[4], activation=log.activation,
                saturated=_summary(log.saturated), dead=dead,
                finite=all(math.isfinite(v) for v in stats[:2] + stats[3:])
                and all(math.isfinite(v) for series in (log.output_grad_rms, log.weight_grad_norms())
                        for v in series),
            ))
        return rows

    @property
    def verdict(self) -> Verdict:
        """The conclusion and the numbers behind it."""
        if not self._logs:
            return Verdict("no data", None, "the model has no layer with a weight matrix; pass select=")
        if self.steps == 0:
            return Verdict("no data", None, "no backward pass was observed inside the `with` block")
        rows = self.layers
        broken = [r.index for r in rows if not r.finite]
        if broken:
            return Verdict("exploding", None, f"non-finite gradients or activations at layers {_ranges(broken)}")
        ref = rows[self._reference()]
        first, last = rows[0], rows[-1]
        weights = f"weight-gradient norm at layer 1 is {_ratio(first.weight_grad_norm, last.weight_grad_norm):.1e}× " \
                  f"layer {last.index}'s"
        low = [r for r in rows if r.relative_grad < self.vanishing_below]
        if low:
            top = max(r.index for r in low)
            return Verdict("vanishing", top, (
                f"back-propagated gradient at layer 1 is {first.relative_grad:.1e}× layer {ref.index}'s "
                f"(threshold {self.vanishing_below:g}); {weights}; update/weight ratio "
                f"{first.update_ratio:.1e} at layer 1 vs {last.update_ratio:.1e} at layer {last.index}"))
        high = [r for r in rows if r.relative_grad > self.exploding_above]
        if high:
            return Verdict("exploding", None, (
                f"back-propagated gradient at layer 1 is {first.relative_grad:.1e}× layer {ref.index}'s "
                f"(threshold {self.exploding_above:g}); {weights}"))
        jumpy = [r.index for r in rows if r.update_ratio > 1]
        if jumpy:
            return Verdict("exploding", None,
                           f"weights change by more than their own norm in one step at layers {_ranges(jumpy)}")
        spread = [r.relative_grad for r in rows]
        return Verdict("healthy", None, (
            f"back-propagated gradients within {min(spread):.1e}–{max(spread):.1e}× layer {ref.index}'s; "
            f"{weights}"))

    def table(self) -> str:
        """The per-layer evidence as a fixed-width text table (under 80 columns for an MLP)."""
        pct = lambda v: "  -" if math.isnan(v) else f"{100 * v:3.0f}%"  # noqa: E731
        lines = [f"{'layer':>5} {'act':<7} {'|dL/dW|':>7} {'dL/dout':>7} {'rel':>7} {'upd/w':>7} "
                 f"{'out std':>7} {'sat':>4} {'dead':>4}  name"]
        for r in self.layers:
            numbers = (r.weight_grad_norm, r.output_grad_rms, r.relative_grad, r.update_ratio, r.output_std)
            lines.append(f"{r.index:>5} {(r.activation or '-')[:7]:<7} "
                         + " ".join(f"{v:7.1e}" for v in numbers)
                         + f" {pct(r.saturated):>4} {pct(r.dead):>4}  {r.name}")
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = self.verdict
        return f"{self.table()}\nsteps watched: {self.steps}\n" + textwrap.fill(
            f"verdict: {verdict.headline}: {verdict.evidence}", width=78, subsequent_indent="  ")


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1–3, 7'."""
    parts, start = [], None
    for i, v in enumerate(indices):
        if start is None:
            start = v
        if i + 1 == len(indices) or indices[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}–{v}")
            start = None
    return ", ".join(parts)
