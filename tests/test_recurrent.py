import math

import pytest
import torch
from sklearn.linear_model import Ridge
from torch import nn

from deepgrad import data, recurrent

D = torch.float64


def torch_module(kind, input_size=3, hidden_size=5, seed=0):
    torch.manual_seed(seed)
    return getattr(nn, {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind])(
        input_size, hidden_size, batch_first=True, dtype=D)


def random_inputs(batch=4, steps=7, features=3, seed=1):
    return torch.randn(batch, steps, features, generator=torch.Generator().manual_seed(seed), dtype=D)


# ----------------------------------------------------------------------------- cells against torch.nn

@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_cells_match_torch_outputs_and_final_state(kind):
    module = torch_module(kind)
    cell = recurrent.cell_from_torch(module)
    x = random_inputs()
    theirs, their_state = module(x)
    mine, my_state = recurrent.unroll(cell, x)
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-13)
    if kind == "lstm":
        torch.testing.assert_close(my_state[0], their_state[0][0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(my_state[1], their_state[1][0], rtol=1e-12, atol=1e-13)
    else:
        torch.testing.assert_close(my_state, their_state[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_cells_match_torch_gradients(kind):
    module = torch_module(kind, seed=2)
    cell = recurrent.cell_from_torch(module)
    x_theirs = random_inputs(seed=3).requires_grad_()
    x_mine = x_theirs.detach().clone().requires_grad_()
    weights = torch.randn(4, 7, 5, generator=torch.Generator().manual_seed(4), dtype=D)
    (module(x_theirs)[0] * weights).sum().backward()
    (recurrent.unroll(cell, x_mine)[0] * weights).sum().backward()
    torch.testing.assert_close(x_mine.grad, x_theirs.grad, rtol=1e-11, atol=1e-13)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(cell, name).grad, getattr(module, f"{name}_l0").grad,
                                   rtol=1e-11, atol=1e-13, msg=name)


@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_cells_pass_gradcheck(kind):
    cell = recurrent.make_cell(kind, 2, 3, dtype=D)
    x = random_inputs(batch=2, steps=4, features=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: recurrent.unroll(cell, v)[0], (x,))


@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_cell_initialisation_matches_torch_bounds(kind):
    cell = recurrent.make_cell(kind, 3, 16)
    bound = 1 / math.sqrt(16)
    for p in cell.parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.8 * bound
    assert cell.weight_hh.shape == (recurrent.GATES[kind] * 16, 16)


def test_cell_from_torch_rejects_what_it_cannot_copy():
    with pytest.raises(TypeError, match="module must be torch.nn.RNN, LSTM or GRU"):
        recurrent.cell_from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="one layer"):
        recurrent.cell_from_torch(nn.LSTM(2, 3, num_layers=2))
    with pytest.raises(ValueError, match="only tanh RNNs"):
        recurrent.cell_from_torch(nn.RNN(2, 3, nonlinearity="relu"))
    with pytest.raises(ValueError, match="kind must be one of"):
        recurrent.make_cell("transformer", 2, 3)


def test_lstm_cell_path_is_the_product_of_forget_gates():
    """With W_hh = 0 the only path from c_0 to c_T is the cell's additive path:
    dc_T/dc_0 = diag(f_T ... f_1), with no weight matrix and no squashing slope."""
    torch.manual_seed(0)
    cell = recurrent.make_cell("lstm", 2, 4, dtype=D)
    with torch.no_grad():
        cell.weight_hh.zero_()
    x = random_inputs(batch=1, steps=6, features=2)
    h0 = torch.zeros(1, 4, dtype=D)

    def final_cell(c0):
        return recurrent.unroll(cell, x, (h0, c0[None]))[1][1][0]

    jac = torch.autograd.functional.jacobian(final_cell, torch.randn(4, dtype=D))
    forgets = torch.stack([cell.gates(x[:, t], h0)[1][0] for t in range(6)])
    torch.testing.assert_close(jac, torch.diag(forgets.prod(0)), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(recurrent.forget_gates(cell, x)[0], forgets)


def test_forget_gates_are_the_lstm_gates_along_the_run():
    cell = recurrent.make_cell("lstm", 3, 5, dtype=D)
    x = random_inputs()
    f = recurrent.forget_gates(cell, x)
    h, _ = recurrent.unroll(cell, x)
    torch.testing.assert_close(f[:, 3], cell.gates(x[:, 3], h[:, 2])[1])
    assert f.shape == (4, 7, 5) and ((f > 0) & (f < 1)).all()
    with pytest.raises(TypeError, match="cell must be an LSTMCell"):
        recurrent.forget_gates(recurrent.make_cell("gru", 3, 5), x)


# ----------------------------------------------------------------------------- truncated BPTT

@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_truncation_cuts_the_gradient_exactly_k_steps_back(kind):
    cell = recurrent.make_cell(kind, 3, 5, dtype=D)
    x = random_inputs(steps=9).requires_grad_()
    full = torch.autograd.grad(recurrent.unroll(cell, x)[0][:, -1].sum(), x)[0]
    cut = torch.autograd.grad(recurrent.unroll(cell, x, truncate=4)[0][:, -1].sum(), x)[0]
    assert (cut[:, :5] == 0).all() and (full[:, :5] != 0).any()
    torch.testing.assert_close(cut[:, 5:], full[:, 5:], rtol=1e-12, atol=1e-15)
    # a window as long as the sequence changes nothing, and the forward pass never changes
    same = torch.autograd.grad(recurrent.unroll(cell, x, truncate=9)[0][:, -1].sum(), x)[0]
    torch.testing.assert_close(same, full, rtol=0, atol=0)
    torch.testing.assert_close(recurrent.unroll(cell, x, truncate=2)[0], recurrent.unroll(cell, x)[0])


def test_unroll_validates():
    cell = recurrent.make_cell("rnn", 3, 5)
    with pytest.raises(ValueError, match="batch × time × features"):
        recurrent.unroll(cell, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="truncate must be an int >= 1"):
        recurrent.unroll(cell, torch.zeros(1, 2, 3), truncate=0)


# ----------------------------------------------------------------------------- the product through time

def _unrolled_map(w, inputs, activation):
    f = torch.tanh if activation == "tanh" else (lambda z: z)

    def run(z0, steps):
        z = z0
        for u in inputs[:steps]:
            z = w @ f(z) + u
        return z
    return run


@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_recurrence_jacobians_match_autograd(activation):
    g = torch.Generator().manual_seed(0)
    n = 6
    w = torch.randn(n, n, generator=g, dtype=D) * 0.6
    inputs, z0 = torch.randn(5, n, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D)
    norms = recurrent.recurrence_jacobians(w, inputs, z0, activation)
    run = _unrolled_map(w, inputs, activation)
    for t in range(1, 6):
        jac = torch.autograd.functional.jacobian(lambda z, t=t: run(z, t), z0)
        assert abs(norms[t - 1] - torch.linalg.matrix_norm(jac, ord=2)) < 1e-12 * max(1.0, norms[t - 1])


def test_notes_factor_order_is_not_the_jacobian():
    """The study notes (note 002 in the fact-check appendix), after Pascanu et al., multiply W_rec^T diag(f');
    the Jacobian of a step is W_rec diag(f')."""
    g = torch.Generator().manual_seed(1)
    w, z = torch.randn(4, 4, generator=g, dtype=D), torch.randn(4, generator=g, dtype=D)
    jac = torch.autograd.functional.jacobian(lambda v: w @ torch.tanh(v), z)
    slope = 1 - torch.tanh(z) ** 2
    torch.testing.assert_close(jac, w * slope)
    assert not torch.allclose(jac, w.T * slope)


def test_recurrence_bound_and_growth_rate():
    g = torch.Generator().manual_seed(2)
    n, steps = 16, 200
    base = torch.randn(n, n, generator=g, dtype=D)
    inputs, z0 = torch.randn(steps, n, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D)
    for radius in (0.8, 1.2):
        w = recurrent.scale_to_spectral_radius(base, radius)
        assert abs(recurrent.spectral_radius(w) - radius) < 1e-12
        top = torch.linalg.matrix_norm(w, ord=2)
        for act in ("tanh", "linear"):
            norms = recurrent.recurrence_jacobians(w, inputs, z0, act)
            t = torch.arange(1, steps + 1, dtype=D)
            assert (norms <= top ** t * (1 + 1e-9)).all()  # gamma = 1 for both
        linear = recurrent.recurrence_jacobians(w, inputs, z0, "linear")
        rate = (linear[-1] / linear[99]) ** (1 / 100)  # Gelfand: ||W^t||^(1/t) -> spectral radius
        assert abs(rate - radius) < 0.02 * radius


def test_recurrence_jacobians_validate():
    with pytest.raises(ValueError, match="activation must be one of"):
        recurrent.recurrence_jacobians(torch.eye(2), torch.zeros(3, 2), torch.zeros(2), "relu")
    with pytest.raises(ValueError, match="need w_rec n×n"):
        recurrent.recurrence_jacobians(torch.eye(2), torch.zeros(3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="matrix must be square"):
        recurrent.spectral_radius(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        recurrent.scale_to_spectral_radius(torch.eye(2), -1.0)


# ----------------------------------------------------------------------------- models and training

def test_sequence_model_forget_bias_and_shapes():
    torch.manual_seed(0)
    plain = recurrent.SequenceModel("lstm", 2, 8)
    torch.manual_seed(0)
    biased = recurrent.SequenceModel("lstm", 2, 8, forget_bias=1.0)
    diff = biased.rnn.bias_hh_l0 - plain.rnn.bias_hh_l0
    assert torch.equal(diff[8:16], torch.ones(8)) and (diff[:8] == 0).all() and (diff[16:] == 0).all()
    assert biased(torch.zeros(3, 5, 2)).shape == (3,)
    assert recurrent.SequenceModel("gru", 2, 8, output_size=4)(torch.zeros(3, 5, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match="forget_bias applies to kind='lstm' only"):
        recurrent.SequenceModel("gru", 2, 8, forget_bias=1.0)


def test_fit_sequences_learns_a_short_adding_problem_and_stops_when_solved():
    torch.manual_seed(0)
    model = recurrent.SequenceModel("gru", 2, 16)
    val = data.adding_problem(500, 6, generator=torch.Generator().manual_seed(1))

    def sample(n, gen):
        return data.adding_problem(n, 6, generator=gen)

    hist = recurrent.fit_sequences(model, sample, val, steps=400, lr=2e-2, stop_below=0.02,
                                   generator=torch.Generator().manual_seed(2))
    assert hist.val_loss[0] > 0.1 and hist.solved_at is not None and hist.final < 0.02
    assert hist.eval_steps[-1] == hist.solved_at < 400


def test_fit_sequences_reports_divergence_without_warnings():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.w * x[:, 0, 0] * float("nan")

    val = data.adding_problem(4, 4)
    hist = recurrent.fit_sequences(Broken(), lambda n, g: data.adding_problem(n, 4, generator=g), val,
                                   steps=10)
    assert hist.diverged_at == 1 and hist.final == math.inf


# ----------------------------------------------------------------------------- echo state networks

def test_esn_states_follow_the_recursion_and_the_spectral_radius():
    esn = recurrent.EchoStateNetwork.random(20, 2, spectral_radius=0.7,
                                            generator=torch.Generator().manual_seed(0))
    assert abs(recurrent.spectral_radius(esn.w_rec) - 0.7) < 1e-12
    u = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    states = esn.states(u)
    a = torch.zeros(20, dtype=D)
    for t in range(5):
        a = torch.tanh(esn.w_rec @ a + esn.w_in @ u[t])
        torch.testing.assert_close(states[t], a)
    sparse = recurrent.EchoStateNetwork.random(50, density=0.1, generator=torch.Generator().manual_seed(2))
    assert (sparse.w_rec == 0).float().mean() > 0.8


def test_ridge_fit_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 6, generator=g, dtype=D), torch.randn(80, 2, generator=g, dtype=D)
    for alpha in (1e-6, 0.5, 10.0):
        w = recurrent.ridge_fit(x, y, alpha)
        ref = Ridge(alpha=alpha).fit(x.numpy(), y.numpy())
        torch.testing.assert_close(w[:-1], torch.as_tensor(ref.coef_.T), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(w[-1], torch.as_tensor(ref.intercept_), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(recurrent.ridge_predict(w, x), torch.as_tensor(ref.predict(x.numpy())))


def test_esn_remembers_recent_inputs():
    g = torch.Generator().manual_seed(0)
    esn = recurrent.EchoStateNetwork.random(50, spectral_radius=0.9, input_scale=0.5, generator=g)
    u, targets = data.delayed_copies(1500, 3, generator=g)
    states = esn.states(u)
    w = recurrent.ridge_fit(states[100:1000], targets[100:1000])
    pred = recurrent.ridge_predict(w, states[1000:])
    r2 = [torch.corrcoef(torch.stack([pred[:, d], targets[1000:, d]]))[0, 1] ** 2 for d in range(3)]
    assert min(r2) > 0.9


def test_esn_validates():
    with pytest.raises(ValueError, match="density must be in"):
        recurrent.EchoStateNetwork.random(5, density=0.0)
    with pytest.raises(TypeError, match="density"):
        recurrent.EchoStateNetwork.random(5, density="0.5")
    with pytest.raises(ValueError, match="units must be an int >= 1"):
        recurrent.EchoStateNetwork.random(0)


@pytest.mark.parametrize("kind", recurrent.KINDS)
def test_sequence_model_truncation_matches_unroll(kind):
    torch.manual_seed(0)
    model = recurrent.SequenceModel(kind, 3, 5).double()
    x = random_inputs(steps=9)
    full = model(x)
    model.truncate = 4
    torch.testing.assert_close(model(x), full, rtol=1e-12, atol=1e-14)  # same forward pass
    model(x).sum().backward()
    cell = recurrent.cell_from_torch(model.rnn)
    mine = model.readout(recurrent.unroll(cell, x, truncate=4)[0][:, -1]).squeeze(-1)
    mine.sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(cell, name).grad, getattr(model.rnn, f"{name}_l0").grad,
                                   rtol=1e-11, atol=1e-13, msg=name)
    with pytest.raises(ValueError, match="truncate must be an int >= 1"):
        recurrent.SequenceModel(kind, 3, 5, truncate=0)


# ----------------------------------------------------------------------------- truncated_bptt: k1, k2, align

def _reach(k1, k2, align, steps=10, at=None):
    """For a loss on the output of step ``at`` (default: the last), which input steps get gradient."""
    torch.manual_seed(0)
    rnn = nn.RNN(1, 3, batch_first=True, dtype=D)
    x = torch.randn(2, steps, 1, dtype=D, requires_grad=True)
    out, _ = recurrent.truncated_bptt(rnn, x, k1=k1, k2=k2, align=align)
    torch.testing.assert_close(out, rnn(x)[0], rtol=1e-12, atol=1e-14)   # the forward pass never changes
    at = steps - 1 if at is None else at
    if not out[:, at].requires_grad:
        return []
    g = torch.autograd.grad(out[:, at].sum(), x)[0]
    return [t for t in range(steps) if (g[:, t] != 0).any()]


def test_truncated_bptt_cuts_where_williams_and_peng_say():
    assert _reach(None, None, "start") == list(range(10))             # no truncation
    assert _reach(4, None, "start") == [8, 9]                          # cuts after steps 4 and 8
    assert _reach(4, None, "end") == [6, 7, 8, 9]                      # cuts before T-4 = 6 and 2
    assert _reach(4, None, "start", at=5) == [4, 5]                    # a loss inside a segment
    assert _reach(4, None, "end", at=5) == [2, 3, 4, 5]
    assert _reach(None, 3, "start") == [7, 8, 9]                       # only the last k2 steps recorded
    assert _reach(None, 3, "start", at=5) == []                        # earlier outputs carry no graph
    assert _reach(5, 2, "start") == [8, 9] and _reach(5, 2, "start", at=4) == [3, 4]
    with pytest.raises(ValueError, match="k2 must be at most k1"):
        _reach(2, 3, "start")
    with pytest.raises(ValueError, match="align"):
        _reach(2, 2, "middle")


def test_sequence_model_truncation_is_the_last_k_steps():
    torch.manual_seed(0)
    model = recurrent.SequenceModel("gru", 2, 4, truncate=3).double()
    x = torch.randn(5, 12, 2, dtype=D, requires_grad=True)
    g = torch.autograd.grad(model(x).sum(), x)[0]
    assert (g[:, :9] == 0).all() and (g[:, 9:] != 0).all()
    # the same numbers as running the first steps without a graph by hand
    with torch.no_grad():
        _, state = model.rnn(x[:, :9])
    torch.testing.assert_close(model(x), model.readout(model.rnn(x[:, 9:], state)[0][:, -1]).squeeze(-1),
                               rtol=0, atol=0)


def test_tanh_rnn_moved_here_and_is_still_importable_from_clipping():
    from deepgrad import clipping, schedules

    assert clipping.TanhRNN is recurrent.TanhRNN
    assert clipping.delayed_recall is data.delayed_recall
    assert clipping.warmup_cosine is schedules.warmup_cosine
    with pytest.raises(TypeError, match="gain"):
        recurrent.TanhRNN(4, gain="1")
    with pytest.raises(ValueError, match="gain"):
        recurrent.TanhRNN(4, gain=math.inf)
