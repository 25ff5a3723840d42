"""deepgrad.residual: training to the end of a schedule (train_to_end) and the whole-training-set fit
it measures (training_set_fit)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import deepgrad as dg
from deepgrad import residual
from deepgrad.residual import ResidualMLP, ScheduleEnd, train_to_end, training_set_fit


def _digits():
    return residual._digits()


def test_training_set_fit_without_batch_norm_is_plain_cross_entropy_and_error():
    torch.manual_seed(0)
    model = ResidualMLP(64, 10, width=8, blocks=2, kind="plain", norm=False)
    x, y = torch.randn(50, 64), torch.randint(0, 10, (50,))
    loss, error = training_set_fit(model, x, y)
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert error == pytest.approx(float((logits.argmax(1) != y).float().mean()))


def test_training_set_fit_normalises_with_the_whole_set_and_leaves_the_model_alone():
    torch.manual_seed(1)
    model = ResidualMLP(64, 10, width=8, blocks=1, kind="plain").double()
    x, y = torch.randn(40, 64, dtype=torch.float64), torch.randint(0, 10, (40,))
    before = copy.deepcopy(model.state_dict())
    loss, _ = training_set_fit(model, x, y)
    assert model.training  # mode, weights and running statistics untouched
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # independent: in training mode every batch norm uses the statistics of x itself; the frozen
    # copy uses the unbiased variance, so the two agree up to the n/(n - 1) correction
    with torch.no_grad():
        train_mode = float(F.cross_entropy(model(x), y))
    assert loss == pytest.approx(train_mode, rel=0.05)
    assert loss != train_mode


def test_training_set_fit_rejects_a_non_module():
    with pytest.raises(TypeError, match="model"):
        training_set_fit(lambda x: x, torch.zeros(2, 64), torch.zeros(2, dtype=torch.long))


def test_train_to_end_matches_the_same_run_written_out():
    steps, lr, seed = 12, 0.2, 3
    end = train_to_end(6, lr, seed, steps=steps, batch_size=32, checkpoints=(0.5, 1.0))
    assert isinstance(end, ScheduleEnd) and end.steps == (6, 12) and not end.diverged
    assert (end.final_loss, end.final_error) == (end.loss[-1], end.error[-1])
    # the same run by hand: seed, model, SGD with momentum, cosine rate to zero, whole-set fit
    data = _digits()
    generator = dg.seed_everything(seed)
    model = ResidualMLP.with_layers(64, 10, 6, kind="plain")
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    rates = []

    def cosine(k):
        rates.append(lr * (1 + math.cos(math.pi * k / steps)) / 2)
        return rates[-1]

    dg.train.fit(model, data, sgd, steps=steps, batch_size=32, generator=generator, eval_every=steps,
                 callbacks=[dg.train.LearningRate(cosine)])
    assert rates[0] == lr and rates[-1] < 0.02 * lr
    assert (end.final_loss, end.final_error) == training_set_fit(model, data.train.x, data.train.y)


def test_train_to_end_is_deterministic_and_depends_on_the_seed():
    a = train_to_end(4, 0.1, 0, steps=8, checkpoints=(1.0,))
    assert a == train_to_end(4, 0.1, 0, steps=8, checkpoints=(1.0,))
    assert a != train_to_end(4, 0.1, 1, steps=8, checkpoints=(1.0,))


def test_train_to_end_fits_the_digits_better_than_at_the_start():
    end = train_to_end(4, 0.3, 0, steps=40, batch_size=128, checkpoints=(0.1, 1.0))
    assert end.final_error < 0.1 and end.final_loss < end.loss[0]


def test_a_diverged_run_is_reported_not_raised():
    end = train_to_end(4, 1e6, 0, steps=20, checkpoints=(0.5, 1.0))
    assert end.diverged and math.isnan(end.final_loss) and math.isnan(end.final_error)


@pytest.mark.parametrize("checkpoints", [(0.5, 0.5), (0.8, 0.2), (0.0, 1.0), (1.0, 1.5), ()])
def test_train_to_end_rejects_bad_checkpoints(checkpoints):
    with pytest.raises(ValueError, match="checkpoints"):
        train_to_end(4, 0.1, 0, steps=10, checkpoints=checkpoints)


def test_train_to_end_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lr"):
        train_to_end(4, 0.0, 0, steps=5)
    with pytest.raises(ValueError, match="layers"):
        train_to_end(5, 0.1, 0, steps=5)
    with pytest.raises(TypeError, match="steps"):
        train_to_end(4, 0.1, 0, steps=2.5)
