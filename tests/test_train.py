"""The training loop: it learns, it is deterministic, it reports divergence instead of crashing."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import deepgrad as dg
from deepgrad import train
from deepgrad.train import evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return dg.data.load_digits()


def _run(digits, lr=0.1, steps=60, seed=0):
    generator = dg.seed_everything(seed)
    model = dg.models.MLP(64, 10, width=32, depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return model, fit(model, digits, opt, steps=steps, batch_size=32, eval_every=20, generator=generator)


def test_fit_learns_and_records(digits):
    model, h = _run(digits)
    assert h.steps == 60 and len(h.train_loss) == 60 and not h.diverged
    assert h.eval_steps == [0, 20, 40, 60]
    assert h.val_loss[-1] < h.val_loss[0] - 0.5
    assert h.val_accuracy[-1] > h.val_accuracy[0] + 0.4
    assert (h.val_loss[-1], h.val_accuracy[-1]) == evaluate(model, digits.val)


def test_fit_is_deterministic(digits):
    assert _run(digits)[1] == _run(digits)[1]


def test_divergence_is_reported_not_raised(digits):
    _, h = _run(digits, lr=1e6, steps=200)
    assert h.diverged and h.diverged_at <= 200
    assert not math.isfinite(h.train_loss[-1])
    assert h.steps == h.diverged_at - 1
    assert all(math.isfinite(v) for v in h.train_loss[:-1])


def test_on_step_and_clipping(digits):
    seen = []
    model = dg.models.MLP(64, 10, width=16, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, digits, opt, steps=5, batch_size=16, max_grad_norm=1e-9,
        on_step=lambda step, loss: seen.append(step))
    assert seen == [1, 2, 3, 4, 5]


def test_evaluate_restores_mode(digits):
    model = dg.models.MLP(64, 10, width=8, depth=1, norm="batch")
    model.train()
    loss, acc = evaluate(model, digits.val, F.cross_entropy)
    assert model.training and 0 <= acc <= 1 and loss > 0
    model.eval()
    evaluate(model, digits.val)
    assert not model.training


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=5, batch_size=0), "batch_size"),
    (dict(steps=5, batch_size=10_000), "batch_size"),
    (dict(steps=5, eval_every=0), "eval_every"),
    (dict(steps=5, max_grad_norm=-1.0), "max_grad_norm"),
])
def test_bad_arguments_are_named(digits, kwargs, match):
    model = dg.models.MLP(64, 10, width=8, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        fit(model, digits, opt, **kwargs)


# --- the core loop and its callbacks ------------------------------------------------------------

def _reference_fit(model, data, opt, steps, batch_size, generator):
    """The loop written out by hand: epochs of shuffled full batches, stop on a non-finite loss."""
    losses, step = [], 0
    while step < steps:
        for x, y in dg.data.batches(data.train, batch_size, generator=generator, drop_last=True):
            step += 1
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                return losses
            loss.backward()
            opt.step()
            if step == steps:
                return losses
    return losses


@pytest.mark.parametrize("lr", [0.1, 1e6])
def test_fit_matches_a_loop_written_out(digits, lr):
    runs = []
    for use_fit in (True, False):
        generator = torch.Generator().manual_seed(3)
        torch.manual_seed(0)
        model = dg.models.MLP(64, 10, width=16, depth=2)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        if use_fit:
            runs.append((fit(model, digits, opt, steps=70, batch_size=32, generator=generator).train_loss,
                         torch.randint(10**9, (1,), generator=generator).item()))
        else:
            runs.append((_reference_fit(model, digits, opt, 70, 32, generator),
                         torch.randint(10**9, (1,), generator=generator).item()))
    # the same losses, and the batch generator left in the same state (no batch drawn beyond the run)
    assert runs[0][0] == pytest.approx(runs[1][0], nan_ok=True) and runs[0][1] == runs[1][1]


class _Recorder(train.Callback):
    def __init__(self):
        self.calls = []

    def on_train_start(self, run):
        self.calls.append("start")

    def on_step_start(self, run):
        self.calls.append(f"step{run.step}")

    def after_loss(self, run):
        self.calls.append("loss")

    def after_backward(self, run):
        assert all(p.grad is not None for p in run.model.parameters())
        self.calls.append("backward")

    def after_step(self, run):
        self.calls.append("update")

    def on_eval(self, run, metrics):
        self.calls.append(f"eval{run.step}")

    def on_train_end(self, run):
        self.calls.append("end")


def _batches(n=100, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x.sum(1) > 0).long()
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def test_loop_calls_the_hooks_in_order():
    model = torch.nn.Linear(4, 2)
    rec = _Recorder()
    h = train.loop(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1), steps=2, callbacks=[rec],
                   evaluate=lambda m: {"val_loss": 1.0}, eval_every=2)
    assert rec.calls == ["start", "step1", "loss", "backward", "update",
                         "step2", "loss", "backward", "update", "eval2", "end"]
    assert h.eval_steps == [0, 2] and h.steps == 2


class _SkipEven(train.Callback):
    def after_backward(self, run):
        run.skip_update = run.step % 2 == 0

    def after_step(self, run):
        run.history.log("after_step", run.step)


def test_a_skipped_update_makes_no_optimizer_step_and_is_counted_apart():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepped = []
    optimizer.register_step_post_hook(lambda *args: stepped.append(1))
    h = train.loop(model, _batches(), optimizer, steps=7, callbacks=[_SkipEven()])
    assert h.updates == len(stepped) == 4 and h.skipped == 3 and h.steps == 7
    assert h.logs["after_step"] == [1, 2, 3, 4, 5, 6, 7]   # after_step runs on skipped steps too


def test_loop_without_steps_runs_until_the_batches_run_out():
    model = torch.nn.Linear(4, 2)
    h = train.loop(model, _batches(n=40), torch.optim.SGD(model.parameters(), lr=0.1))
    assert h.steps == 5 and len(h.train_loss) == 5 and h.stopped_at is None


def test_loop_marks_divergence_without_updating_or_warning():
    model = torch.nn.Linear(4, 2)
    batches = _batches()
    batches[2] = (torch.full_like(batches[2][0], math.nan), batches[2][1])
    rec = _Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = train.loop(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), steps=10,
                       callbacks=[rec, train.GradNormLog()])
    assert h.diverged_at == 3 and h.steps == 2 and len(h.train_loss) == 3
    assert rec.calls[-3:] == ["update", "step3", "end"]          # no backward, no update at step 3
    assert len(h.logs["grad_norm"]) == 3 and math.isnan(h.logs["grad_norm"][-1])


def test_learning_rate_callback_sets_and_logs_the_rate():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []
    h = train.loop(model, _batches(), opt, steps=4, callbacks=[
        train.LearningRate(lambda k: 0.1 * (k + 1)), train.OnStep(lambda run: seen.append(opt.param_groups[0]["lr"]))])
    assert h.logs["lr"] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and seen == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_clipping_callbacks_bound_the_gradient_before_the_update():
    norms, biggest = [], []

    class Look(train.Callback):
        def after_backward(self, run):
            grads = [p.grad for p in run.model.parameters()]
            norms.append(train.global_grad_norm(run.model))
            biggest.append(max(g.abs().max().item() for g in grads))

    for clip in (train.ClipGradNorm(1e-3), train.ClipGradValue(1e-4)):
        norms.clear(), biggest.clear()
        model = torch.nn.Linear(4, 2)
        train.loop(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1), steps=3,
                   callbacks=[train.GradNormLog(), clip, Look()])
        if isinstance(clip, train.ClipGradNorm):
            assert max(norms) <= 1e-3 * (1 + 1e-5)
        else:
            assert max(biggest) <= 1e-4


def test_stop_below_ends_the_run_at_the_first_good_evaluation():
    model = torch.nn.Linear(4, 2)
    values = iter([5.0, 3.0, 0.5, 0.1])
    h = train.loop(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1), steps=10,
                   callbacks=[train.StopBelow(1.0)], evaluate=lambda m: {"val_loss": next(values)}, eval_every=2)
    assert h.stopped_at == 4 and h.eval_steps == [0, 2, 4] and h.steps == 4


def test_loop_refuses_what_is_not_a_callback():
    model = torch.nn.Linear(4, 2)
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        train.loop(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[print])


def test_layerwise_freezes_all_but_the_stage_and_stops_after_divergence():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    net = torch.nn.Sequential(a, torch.nn.Tanh(), b)
    seen = []

    def train_stage(network, trainable):
        seen.append([p.requires_grad for p in network.parameters()])
        h = train.History()
        h.diverged_at = 1 if len(seen) == 2 else None
        return h

    stages = [(net, list(a.parameters())), (net, list(b.parameters())), (net, [])]
    histories = train.layerwise(stages, train_stage)
    assert seen == [[True, True, False, False], [False, False, True, True]] and len(histories) == 2
    assert all(p.requires_grad for p in net.parameters())
