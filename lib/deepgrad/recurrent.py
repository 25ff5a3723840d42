"""Recurrent networks: the product through time, gated cells written out, echo state networks.

- :func:`recurrence_jacobians` runs z_t = W_rec f(z_{t-1}) + u_t and returns ‖∂z_t/∂z_0‖ for every t,
  the product of Pascanu, Mikolov & Bengio (2013), eq. 5.
- :func:`spectral_radius`, :func:`scale_to_spectral_radius`: the largest |eigenvalue| of a matrix.
- :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`: one time step of each, written from the
  equations, with the parameter layout (names, shapes and gate order) of ``torch.nn.RNN``,
  ``torch.nn.LSTM`` and ``torch.nn.GRU``, so that :func:`cell_from_torch` can copy their weights.
- :func:`truncated_bptt`, the library's one truncated backpropagation through time (Williams & Peng's
  k1 and k2), used by :func:`unroll`, :class:`SequenceModel` and :class:`TanhRNN`.
- :func:`unroll` runs a cell over a sequence, optionally truncating backpropagation through time.
- :class:`SequenceModel` (PyTorch's fused recurrent layer plus a linear read-out of the last step),
  :class:`TanhRNN` (a fused tanh layer with a read-out at every step), and :func:`fit_sequences`,
  which trains a sequence model with :func:`deepgrad.train.loop`.
- :class:`EchoStateNetwork` and :func:`ridge_fit`: a fixed random reservoir with a trained linear
  read-out (Jaeger, 2001).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepgrad import init as init_
from deepgrad._checks import fraction, non_negative, one_of, positive, positive_int
from deepgrad.train import ClipGradNorm, History, StopBelow, loop, supervised

#: The recurrent cells this module implements, by name.
KINDS = ("rnn", "lstm", "gru")
_TORCH_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
#: Gates per cell: the rows of ``weight_ih``/``weight_hh`` are this many blocks of ``hidden_size``.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

State = Tensor | tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- the product through time

def spectral_radius(matrix: Tensor) -> float:
    """The largest absolute value of the eigenvalues of a square ``matrix``."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
    return torch.linalg.eigvals(matrix).abs().max().item()


def scale_to_spectral_radius(matrix: Tensor, radius: float) -> Tensor:
    """``matrix`` multiplied by the scalar that makes its spectral radius equal ``radius``."""
    non_negative("radius", radius)
    current = spectral_radius(matrix)
    if current == 0:
        raise ValueError("matrix has spectral radius 0 and cannot be rescaled")
    return matrix * (radius / current)


def recurrence_jacobians(w_rec: Tensor, inputs: Tensor, z0: Tensor, activation: str = "tanh") -> Tensor:
    """‖∂z_t/∂z_0‖ (spectral norm) for t = 1, ..., T along z_t = W_rec f(z_{t-1}) + u_t.

    The Jacobian of one step is ∂z_t/∂z_{t-1} = W_rec diag(f'(z_{t-1})), so
    ∂z_t/∂z_0 = W_rec D_{t-1} W_rec D_{t-2} ⋯ W_rec D_0 with D_i = diag(f'(z_i))
    (Pascanu, Mikolov & Bengio, 2013, eq. 5, in the column-vector convention). ``inputs`` holds the
    drive u_1, ..., u_T as rows (T × n), ``z0`` the initial pre-activation (n); ``activation`` is
    ``"tanh"`` or ``"linear"``. Returns a tensor of T norms.
    """
    one_of("activation", activation, ["tanh", "linear"])
    n = w_rec.shape[0]
    if w_rec.shape != (n, n) or z0.shape != (n,) or inputs.ndim != 2 or inputs.shape[1] != n:
        raise ValueError(f"need w_rec n×n, z0 (n,) and inputs T×n; got {tuple(w_rec.shape)}, "
                         f"{tuple(z0.shape)}, {tuple(inputs.shape)}")
    product = torch.eye(n, dtype=w_rec.dtype, device=w_rec.device)
    z, norms = z0, []
    for u in inputs:
        if activation == "tanh":
            a, slope = torch.tanh(z), 1 - torch.tanh(z) ** 2
        else:
            a, slope = z, torch.ones_like(z)
        product = (w_rec * slope) @ product  # W_rec diag(f'(z)) times the product so far
        z = w_rec @ a + u
        norms.append(torch.linalg.matrix_norm(product, ord=2))
    return torch.stack(norms)


# --------------------------------------------------------------------------- cells written out

class _Cell(nn.Module):
    """Parameters laid out as in ``torch.nn.RNN``/``LSTM``/``GRU`` (layer 0), initialised the same way:
    every entry uniform in ±1/√hidden_size."""

    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        positive_int("input_size", input_size)
        positive_int("hidden_size", hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = GATES[self.kind] * hidden_size
        kw = dict(dtype=dtype, device=device)
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
        self.bias_hh = nn.Parameter(torch.empty(rows, **kw))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            init_.uniform_(p, bound)

    def initial_state(self, batch: int) -> State:
        """The zero state for ``batch`` sequences."""
        return self.weight_hh.new_zeros(batch, self.hidden_size)

    @staticmethod
    def hidden(state: State) -> Tensor:
        """The hidden vector h_t of a state (for the LSTM, the first of (h, c))."""
        return state[0] if isinstance(state, tuple) else state


class RNNCell(_Cell):
    """Elman's cell: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    kind = "rnn"

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)


class LSTMCell(_Cell):
    """The LSTM cell with a forget gate (Hochreiter & Schmidhuber, 1997; Gers et al., 2000).

    With s = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh split into four blocks in PyTorch's order,
    i = σ(s_i), f = σ(s_f), g = tanh(s_g), o = σ(s_o), and
    c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t).
    The state is the pair (h_t, c_t).
    """

    kind = "lstm"

    def initial_state(self, batch: int) -> tuple[Tensor, Tensor]:
        zeros = self.weight_hh.new_zeros(batch, self.hidden_size)
        return zeros, zeros.clone()

    def gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The input, forget, candidate and output gates (i, f, g, o) at one step."""
        s = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = s.chunk(4, dim=-1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, g, o = self.gates(x, h)
        c = f * c + i * g  # the additive path: the constant error carousel when f = 1
        return o * torch.tanh(c), c


class GRUCell(_Cell):
    """The gated recurrent unit (Cho et al., 2014) in PyTorch's form.

    r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr), z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz),
    n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn)),   h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.
    """

    kind = "gru"

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        xr, xz, xn = (x @ self.weight_ih.T + self.bias_ih).chunk(3, dim=-1)
        hr, hz, hn = (h @ self.weight_hh.T + self.bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


_CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(kind: str, input_size: int, hidden_size: int, **kwargs) -> _Cell:
    """A from-scratch cell of ``kind`` (``"rnn"``, ``"lstm"`` or ``"gru"``)."""
    one_of("kind", kind, KINDS)
    return _CELLS[kind](input_size, hidden_size, **kwargs)


def cell_from_torch(module: nn.RNNBase) -> _Cell:
    """A from-scratch cell holding copies of the first layer's weights of a ``torch.nn`` RNN/LSTM/GRU.

    Only single-layer, unidirectional tanh modules with biases are accepted.
    """
    kind = {v: k for k, v in _TORCH_NAMES.items()}.get(type(module).__name__)
    if kind is None:
        raise TypeError(f"module must be torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    if module.num_layers != 1 or module.bidirectional or not module.bias or module.proj_size:
        raise ValueError("module must have one layer, one direction, biases and no projection")
    if kind == "rnn" and module.nonlinearity != "tanh":
        raise ValueError(f"only tanh RNNs are supported, got nonlinearity={module.nonlinearity!r}")
    weight = module.weight_ih_l0
    cell = make_cell(kind, module.input_size, module.hidden_size, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, f"{name}_l0"))
    return cell


def forget_gates(cell: LSTMCell, inputs: Tensor) -> Tensor:
    """The forget gates f_1, ..., f_T (batch × time × hidden) of an LSTM cell run over ``inputs`` from
    the zero state. Along the cell's additive path c_t = f_t ⊙ c_{t-1} + ..., the gradient from c_T
    to c_k is multiplied by f_T ⊙ ⋯ ⊙ f_{k+1}."""
    if not isinstance(cell, LSTMCell):
        raise TypeError(f"cell must be an LSTMCell, got {type(cell).__name__}")
    state, gates = cell.initial_state(inputs.shape[0]), []
    for t in range(inputs.shape[1]):
        gates.append(cell.gates(inputs[:, t], state[0])[1])
        state = cell(inputs[:, t], state)
    return torch.stack(gates, dim=1)


def _detached(state: State) -> State:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


#: Where :func:`truncated_bptt` puts its cuts: counted from the first step or back from the last.
ALIGNS = ("start", "end")


def truncated_bptt(segment: Callable[[Tensor, State | None], tuple[Tensor, State]], inputs: Tensor,
                   state: State | None = None, *, k1: int | None, k2: int | None = None,
                   align: str = "start") -> tuple[Tensor, State]:
    """Run a recurrent network over ``inputs`` (batch × time × ...) with truncated backpropagation
    through time; return (the outputs of every step, joined on dim 1; the last state).

    Williams & Peng (1990) describe BPTT(h; h'): every h' steps the error is propagated back h steps.
    In the usual names, k1 = h' is the number of steps between truncations and k2 = h the number of
    steps back-propagated. Here one forward pass builds the graph that one backward pass later
    follows: the sequence is cut into segments of ``k1`` steps, the state entering a segment is
    detached (its value carries on, no gradient crosses the cut), and inside a segment only the last
    ``k2`` steps are recorded by autograd (the earlier ones run under ``torch.no_grad``). A loss on
    step t therefore sends gradient back to the later of the segment's start and its last k2 steps'
    start: at most k1 steps, and exactly k2 for a loss at a truncation point (the end of a segment).

    - ``k1=None``: no cuts, one segment (with ``k2`` given, the usual "last k2 steps only" for a loss
      on the last step: BPTT(k2; T) with a single truncation point at the end);
    - ``k2=None`` (default): ``k2 = k1``, every step of a segment recorded (losses at every step);
      ``k2 > k1`` would need overlapping backward passes and is refused;
    - ``align="start"``: cuts after steps k1, 2k1, ... (the last segment may be shorter);
      ``align="end"``: cuts before steps T − k1, T − 2k1, ..., so the last step always has a full
      segment behind it (the first segment may be shorter).

    ``segment(x, state)`` runs the network over ``x`` (batch × steps × ...) from ``state`` (``None``:
    the network's initial state) and returns (its outputs, batch × steps × ...; its last state), as
    ``torch.nn.RNN`` does.
    """
    one_of("align", align, ALIGNS)
    steps = inputs.shape[1]
    if k1 is not None:
        positive_int("k1", k1)
    if k2 is not None:
        positive_int("k2", k2)
        if k1 is not None and k2 > k1:
            raise ValueError(f"k2 must be at most k1={k1} (one backward pass per sequence), got {k2}")
    length = steps if k1 is None else k1
    if align == "start":
        cuts = list(range(0, steps, length))
    else:
        cuts = [0, *sorted(range(steps - length, 0, -length))]
    outputs = []
    for i, start in enumerate(cuts):
        stop = cuts[i + 1] if i + 1 < len(cuts) else steps
        if i > 0:
            state = _detached(state)
        recorded = stop - start if k2 is None else min(k2, stop - start)
        if recorded < stop - start:
            with torch.no_grad():
                out, state = segment(inputs[:, start:stop - recorded], state)
            outputs.append(out)
            start = stop - recorded
        out, state = segment(inputs[:, start:stop], state)
        outputs.append(out)
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)), state


def unroll(cell: _Cell, inputs: Tensor, state: State | None = None, *,
           truncate: int | None = None) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs`` (batch × time × features); return (h_1..h_T stacked, last state).

    With ``truncate = k`` backpropagation through time is truncated: :func:`truncated_bptt` with
    ``k1 = k2 = k`` and cuts aligned on the end of the sequence, so a loss on the last output sends
    gradient back through at most k steps (Williams & Peng, 1990).
    """
    if inputs.ndim != 3:
        raise ValueError(f"inputs must be batch × time × features, got shape {tuple(inputs.shape)}")
    if truncate is not None:
        positive_int("truncate", truncate)
    if state is None:
        state = cell.initial_state(inputs.shape[0])

    def segment(x: Tensor, s: State) -> tuple[Tensor, State]:
        outputs = []
        for t in range(x.shape[1]):
            s = cell(x[:, t], s)
            outputs.append(cell.hidden(s))
        return torch.stack(outputs, dim=1), s

    return truncated_bptt(segment, inputs, state, k1=truncate, align="end")


# --------------------------------------------------------------------------- models and training

class SequenceModel(nn.Module):
    """PyTorch's fused recurrent layer (``nn.RNN``/``LSTM``/``GRU``) and a linear read-out of h_T.

    ``forget_bias`` is added to the LSTM's forget-gate bias (a common choice is 1: Gers et al. 2000,
    Jozefowicz et al. 2015); it must be 0 for the other kinds. The output has ``output_size`` columns,
    squeezed to a vector when ``output_size`` is 1. With ``truncate = k`` the output is unchanged
    but its gradient flows back through the last k steps only (truncated BPTT).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int = 1, *,
                 forget_bias: float = 0.0, truncate: int | None = None) -> None:
        super().__init__()
        one_of("kind", kind, KINDS)
        positive_int("output_size", output_size)
        if truncate is not None:
            positive_int("truncate", truncate)
        if forget_bias and kind != "lstm":
            raise ValueError(f"forget_bias applies to kind='lstm' only, got kind={kind!r}")
        self.kind, self.truncate = kind, truncate
        self.rnn = getattr(nn, _TORCH_NAMES[kind])(input_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, output_size)
        if forget_bias:
            with torch.no_grad():
                self.rnn.bias_hh_l0[hidden_size:2 * hidden_size] += forget_bias

    def forward(self, x: Tensor) -> Tensor:
        # truncated BPTT for a loss on the last step (k1 = None, k2 = truncate): the same forward pass,
        # but the state that enters the last k steps is computed without a graph
        h = truncated_bptt(self.rnn, x, k1=None, k2=self.truncate)[0]
        out = self.readout(h[:, -1])
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class TanhRNN(nn.Module):
    """h_t = tanh(W_in u_t + W_rec h_{t−1} + b), ŷ_t = W_out h_t + c, for sequences of scalars.

    ``gain`` scales the orthogonal initial W_rec (every singular value equal to ``gain``); the other
    weights keep PyTorch's defaults. ``forward(u, truncate=k)`` cuts the graph every k steps from the
    first (:func:`truncated_bptt` with ``k1 = k2 = k``, ``align="start"``; Williams & Peng 1990): the
    state is carried forward unchanged, but no gradient flows back across a cut, so no product has
    more than k factors.
    """

    def __init__(self, hidden: int = 32, *, gain: float = 1.0):
        super().__init__()
        positive_int("hidden", hidden)
        positive("gain", gain)
        self.rnn = nn.RNN(1, hidden, nonlinearity="tanh", batch_first=True)
        self.readout = nn.Linear(hidden, 1)
        with torch.no_grad():
            init_.orthogonal_(self.rnn.weight_hh_l0, gain=gain)

    @property
    def recurrent_weight(self) -> Tensor:
        """W_rec, the hidden-to-hidden matrix."""
        return self.rnn.weight_hh_l0

    def forward(self, u: Tensor, truncate: int | None = None) -> Tensor:
        if truncate is not None:
            positive_int("truncate", truncate)
        return self.readout(truncated_bptt(self.rnn, u, k1=truncate, align="start")[0])


class SequenceHistory(History):
    """What :func:`fit_sequences` measured: a :class:`~deepgrad.train.History` whose validation loss
    was recorded after ``eval_steps`` updates (0 = start); ``solved_at`` is the step at which it fell
    below ``stop_below``."""

    @property
    def solved_at(self) -> int | None:
        return self.stopped_at

    @property
    def final(self) -> float:
        """The last validation loss (``inf`` for a diverged run)."""
        return math.inf if self.diverged_at is not None else self.val_loss[-1]


def fit_sequences(model: nn.Module, sample: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
                  val: tuple[Tensor, Tensor], *, steps: int, lr: float = 1e-2, batch_size: int = 64,
                  clip: float | None = 1.0, eval_every: int = 25, stop_below: float | None = None,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss,
                  generator: torch.Generator | None = None) -> SequenceHistory:
    """Train ``model`` with Adam on fresh batches ``sample(batch_size, generator)``: :func:`deepgrad.train.loop`.

    Every ``eval_every`` steps the loss on ``val = (x, y)`` is recorded; training stops early once
    it falls below ``stop_below`` (the task counts as solved: :class:`~deepgrad.train.StopBelow`) and
    at once, marked diverged, if the training loss is not finite. Gradients are clipped to norm
    ``clip`` (``None``: no clipping).
    """
    positive_int("steps", steps)
    positive_int("eval_every", eval_every)
    positive_int("batch_size", batch_size)
    non_negative("lr", lr)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def fresh_batches():
        while True:
            yield sample(batch_size, generator)

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": float(loss_fn(m(val[0]), val[1]))}

    callbacks = [] if clip is None else [ClipGradNorm(clip)]
    if stop_below is not None:
        callbacks.append(StopBelow(stop_below))
    return loop(model, fresh_batches(), optimizer, steps=steps, step_loss=supervised(loss_fn),
                callbacks=callbacks, evaluate=evaluate, eval_every=eval_every, history=SequenceHistory())


# --------------------------------------------------------------------------- echo state networks

@dataclass
class EchoStateNetwork:
    """A fixed random reservoir a_t = tanh(W_rec a_{t-1} + W_in u_t) (Jaeger, 2001).

    Only a linear read-out of the states is trained (:func:`ridge_fit`); W_rec and W_in never change,
    so no gradient flows through time.
    """

    w_in: Tensor   # units × inputs
    w_rec: Tensor  # units × units

    @classmethod
    def random(cls, units: int, inputs: int = 1, *, spectral_radius: float = 0.9, input_scale: float = 1.0,
               density: float = 1.0, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> EchoStateNetwork:
        """W_rec Gaussian (a fraction ``density`` of entries kept) rescaled to ``spectral_radius``;
        W_in uniform in ±``input_scale``."""
        positive_int("units", units)
        positive_int("inputs", inputs)
        non_negative("input_scale", input_scale)
        fraction("density", density, open_high=False)
        w = torch.randn(units, units, generator=generator, dtype=dtype)
        if density < 1:
            w = w * (torch.rand(units, units, generator=generator, dtype=dtype) < density)
        w_in = (2 * torch.rand(units, inputs, generator=generator, dtype=dtype) - 1) * input_scale
        return cls(w_in, scale_to_spectral_radius(w, spectral_radius))

    def states(self, inputs: Tensor) -> Tensor:
        """The reservoir states a_1, ..., a_T (T × units) driven by ``inputs`` (T × inputs), from a_0 = 0."""
        if inputs.ndim == 1:
            inputs = inputs[:, None]
        a = self.w_rec.new_zeros(self.w_rec.shape[0])
        out = []
        drive = inputs.to(self.w_in.dtype) @ self.w_in.T
        for u in drive:
            a = torch.tanh(self.w_rec @ a + u)
            out.append(a)
        return torch.stack(out)


def ridge_fit(features: Tensor, targets: Tensor, alpha: float = 1e-6) -> Tensor:
    """Ridge regression with an unpenalised intercept: returns W (features + 1 × outputs), last row the bias.

    Minimises ‖Y − X W_x − 1 b‖² + α‖W_x‖² in closed form, W_x = (X_cᵀX_c + αI)⁻¹ X_cᵀ Y_c on centred data.
    """
    non_negative("alpha", alpha)
    if targets.ndim == 1:
        targets = targets[:, None]
    x_mean, y_mean = features.mean(0), targets.mean(0)
    xc, yc = features - x_mean, targets - y_mean
    gram = xc.T @ xc + alpha * torch.eye(features.shape[1], dtype=features.dtype, device=features.device)
    w = torch.linalg.solve(gram, xc.T @ yc)
    bias = y_mean - x_mean @ w
    return torch.cat([w, bias[None]], dim=0)


def ridge_predict(weights: Tensor, features: Tensor) -> Tensor:
    """Predictions X W_x + b of a read-out from :func:`ridge_fit`."""
    return features @ weights[:-1] + weights[-1]
