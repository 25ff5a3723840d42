"""EarlyStopping behaves exactly like keras.callbacks.EarlyStopping; fit's hook; Prechelt's criteria.

Keras 3 runs on the torch backend here. Keras compares monitored values in float32 (its floatx)
and deepgrad in float64, so the sequences below use values that are exact in both (multiples of
1/16): the comparison is then the same in both, and any difference is one of logic.
"""

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import deepgrad as dg
from deepgrad.train import (
    EarlyStopping,
    fit,
    generalization_loss,
    prechelt_stop,
    training_progress,
)

os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")

nan = math.nan

# Keras 3.15's Variable.numpy() trips NumPy 2's __array__(copy=...) deprecation: Keras', not ours
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SEQUENCES = {
    "improving": [2.0, 1.5, 1.25, 1.0, 0.875, 0.75, 0.625, 0.5],
    "plateau": [2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5],
    "overfitting": [2.0, 1.0, 0.75, 0.625, 0.6875, 0.75, 0.875, 1.0, 1.25],
    "noisy": [2.0, 1.0, 1.125, 0.9375, 1.0625, 0.875, 1.0, 0.9375, 0.8125, 1.0, 1.125, 1.25],
    "tiny steps": [1.0, 0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625],
    "nan midway": [2.0, 1.0, nan, 0.75, nan, nan, 0.5, nan, nan, nan],
    "nan first": [nan, 1.0, 0.5, 0.25, 0.125],
    "never improves": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25],
    "late minimum": [1.0, 1.125, 1.25, 1.0625, 0.5, 0.75, 0.875, 1.0],
}

SETTINGS = {
    "patience 0": dict(patience=0),
    "patience 2": dict(patience=2),
    "patience 3, restore": dict(patience=3, restore_best_weights=True),
    "min_delta": dict(patience=1, min_delta=0.125, restore_best_weights=True),
    "baseline": dict(patience=2, baseline=0.75, restore_best_weights=True),
    "baseline and min_delta": dict(patience=2, baseline=1.0, min_delta=0.0625,
                                   restore_best_weights=True),
    "unreachable baseline": dict(patience=3, baseline=0.0625, restore_best_weights=True),
    "start_from_epoch": dict(patience=1, start_from_epoch=3, restore_best_weights=True),
    "restore, never stops": dict(patience=50, restore_best_weights=True),
    "negative min_delta": dict(patience=2, min_delta=-0.125, restore_best_weights=True),
}


def _keras_run(values, monitor="val_loss", **settings):
    """Drive Keras' callback epoch by epoch; the weights after epoch t are all equal to t."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = keras.callbacks.EarlyStopping(monitor=monitor, **settings)
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        model.set_weights([np.full((1, 1), float(epoch), dtype="float32"),
                           np.full((1,), float(epoch), dtype="float32")])
        callback.on_epoch_end(epoch, {monitor: value})
        ran += 1
        if model.stop_training:
            break
    callback.on_train_end()
    final = float(model.get_weights()[0][0, 0])
    return ran, callback.stopped_epoch, callback.best_epoch, final


def _deepgrad_run(values, monitor="val_loss", **settings):
    model = nn.Linear(1, 1)
    stopper = EarlyStopping(monitor=monitor, **settings)
    stopper.reset()
    ran = 0
    for epoch, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
            model.bias.fill_(float(epoch))
        ran += 1
        if stopper.update(epoch, {monitor: value}, model):
            break
    stopper.finish(model)
    assert model.bias.item() == model.weight.item()  # buffers and all parameters restored together
    return ran, stopper.stopped_epoch, stopper.best_epoch, model.weight.item()


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_same_stopping_epoch_and_weights_as_keras(sequence, setting):
    values, settings = SEQUENCES[sequence], SETTINGS[setting]
    assert _deepgrad_run(values, **settings) == _keras_run(values, **settings)


@pytest.mark.parametrize("setting", ["patience 2", "min_delta", "baseline", "start_from_epoch"])
@pytest.mark.parametrize("sequence", ["improving", "overfitting", "noisy", "nan midway"])
def test_mode_max_matches_keras_on_accuracy(sequence, setting):
    settings = dict(SETTINGS[setting])
    if "baseline" in settings:
        settings["baseline"] = -settings["baseline"]
    values = [-v for v in SEQUENCES[sequence]]  # an accuracy-like quantity: higher is better
    for mode in ("max",):
        ours = _deepgrad_run(values, monitor="val_accuracy", mode=mode, **settings)
        assert ours == _keras_run(values, monitor="val_accuracy", mode=mode, **settings)
    # mode="auto" knows that accuracy goes up
    assert _deepgrad_run(values, monitor="val_accuracy", **settings) == ours


def test_the_comparison_can_fail():
    """A deliberately different rule (wait reset on every improvement, ignoring the baseline) is caught."""
    values, settings = SEQUENCES["overfitting"], SETTINGS["unreachable baseline"]
    ours = _deepgrad_run(values, **{**settings, "baseline": None})
    assert ours != _keras_run(values, **settings)


def test_patience_counts_epochs_without_improvement():
    stopper = EarlyStopping(patience=3)
    decisions = [stopper.update(t, {"val_loss": v}) for t, v in enumerate([1.0, 0.5, 0.6, 0.7, 0.8])]
    assert decisions == [False, False, False, False, True]
    assert stopper.best == 0.5 and stopper.best_epoch == 1 and stopper.stopped_epoch == 4


def test_reset_allows_reuse():
    stopper = EarlyStopping(patience=0)
    stopper.update(0, {"val_loss": 1.0})
    assert stopper.update(1, {"val_loss": 2.0})
    stopper.reset()
    assert stopper.best is None and not stopper.stop_training and stopper.wait == 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(monitor=""), ValueError, "monitor"),
    (dict(patience=-1), ValueError, "patience"),
    (dict(patience=1.5), TypeError, "patience"),
    (dict(mode="up"), ValueError, "mode"),
    (dict(monitor="f1"), ValueError, "mode='auto'"),
    (dict(min_delta=math.inf), ValueError, "min_delta"),
    (dict(baseline="low"), TypeError, "baseline"),
    (dict(monitor=1), TypeError, "monitor"),
    (dict(min_delta="0.1"), TypeError, "min_delta"),
    (dict(restore_best_weights=1), TypeError, "restore_best_weights"),
    (dict(start_from_epoch=-2), ValueError, "start_from_epoch"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyStopping(**kwargs)


def test_missing_metric_and_missing_model_are_named():
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping().update(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="model"):
        EarlyStopping(restore_best_weights=True).update(0, {"val_loss": 1.0})


# ---------------------------------------------------------------------------------------------
# fit's hook
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_digits():
    digits = dg.data.load_digits()
    few = dg.data.Split(digits.train.x[:64], digits.train.y[:64])
    return dg.data.Dataset("few digits", few, digits.val, digits.test, 64, 10)


def _overfit(data, stopper, steps=300):
    generator = dg.seed_everything(0)
    model = dg.models.MLP(64, 10, width=128, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, data, opt, steps=steps, batch_size=16, eval_every=4,
                  generator=generator, early_stopping=stopper)
    return model, history


def test_fit_stops_early_and_restores_the_best_weights(small_digits):
    _, full = _overfit(small_digits, None)
    stopper = EarlyStopping(patience=5, restore_best_weights=True)
    model, history = _overfit(small_digits, stopper)
    # the run is the same as the full one up to the stop, and ends patience epochs after the best
    assert history.val_loss == full.val_loss[:len(history.val_loss)]
    assert stopper.stopped_epoch > 0 and history.steps < full.steps
    assert stopper.stopped_epoch == stopper.best_epoch + stopper.patience
    assert history.eval_steps[-1] == 4 * (stopper.stopped_epoch + 1)
    # epoch t is evaluation t + 1 (evaluation 0 is the start); its loss is the minimum seen
    assert stopper.best == history.val_loss[stopper.best_epoch + 1] == min(history.val_loss[1:])
    assert dg.train.evaluate(model, small_digits.val)[0] == stopper.best
    assert stopper.best < history.val_loss[-1]


def test_fit_restores_even_when_it_does_not_stop(small_digits):
    stopper = EarlyStopping(patience=10_000, restore_best_weights=True)
    model, history = _overfit(small_digits, stopper, steps=120)
    assert stopper.stopped_epoch == 0 and history.steps == 120
    assert dg.train.evaluate(model, small_digits.val)[0] == min(history.val_loss[1:])


def test_fit_logs_the_training_loss_since_the_last_evaluation(small_digits):
    seen = []

    class Spy(EarlyStopping):
        def update(self, epoch, logs, model=None):
            seen.append((epoch, logs["loss"]))
            return super().update(epoch, logs, model)

    _, history = _overfit(small_digits, Spy(patience=10_000), steps=12)
    assert [e for e, _ in seen] == [0, 1, 2]
    for epoch, loss in seen:
        assert loss == pytest.approx(sum(history.train_loss[4 * epoch:4 * epoch + 4]) / 4)


def test_fit_rejects_a_callable_for_early_stopping(small_digits):
    model = dg.models.MLP(64, 10, width=8, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="early_stopping"):
        fit(model, small_digits, opt, steps=2, early_stopping=lambda *a: True)


# ---------------------------------------------------------------------------------------------
# Prechelt (1998)
# ---------------------------------------------------------------------------------------------

def test_generalization_loss_is_percent_above_the_running_minimum():
    assert generalization_loss([2.0, 1.0, 1.5, 0.5, 0.55]) == pytest.approx([0, 0, 50, 0, 10])


def test_training_progress_per_mille():
    progress = training_progress([4.0, 2.0, 1.0, 1.0, 1.0], k=2)
    assert progress[0] is None
    assert progress[1:] == pytest.approx([1000 * (6 / 4 - 1), 1000 * (3 / 2 - 1), 0, 0])


def test_prechelt_criteria_on_a_hand_made_curve():
    val = [5, 4, 3, 2, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0]
    train = [5, 4, 3, 2, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.44, 0.43, 0.42, 0.41]
    assert prechelt_stop("GL", 5, val) == 6            # 10 % above the minimum at epoch 6
    assert prechelt_stop("GL", 25, val) == 8           # 30 % at epoch 8
    assert prechelt_stop("UP", 1, val) == 10           # 1.5 > 1 (epoch 5)
    assert prechelt_stop("UP", 2, val) == 15           # and 2.0 > 1.5
    assert prechelt_stop("UP", 3, val) is None
    gl = generalization_loss(val)
    p = training_progress(train)
    assert gl[9] / p[9] == pytest.approx(50 / 400)     # GL = 50 %, P_5 = 400 per mille at epoch 10
    assert prechelt_stop("PQ", 0.1, val, train) == 10
    assert prechelt_stop("PQ", 0.5, val, train) == 15
    assert prechelt_stop("PQ", gl[14] / p[14] + 1, val, train) is None


def test_prechelt_bad_arguments():
    with pytest.raises(ValueError, match="criterion"):
        prechelt_stop("XY", 1, [1.0])
    with pytest.raises(ValueError, match="train"):
        prechelt_stop("PQ", 1, [1.0, 2.0])
    with pytest.raises(ValueError, match="threshold"):
        prechelt_stop("UP", 0, [1.0, 2.0])
    with pytest.raises(ValueError, match="val"):
        generalization_loss([])


def test_a_perfect_epoch_is_legal_input_and_gives_the_limits():
    # the minimum is 0: GL is 0 while the error stays 0 and infinite once it rises above it
    assert generalization_loss([0.2, 0.0, 0.0, 0.1]) == [0.0, 0.0, 0.0, math.inf]
    assert prechelt_stop("GL", 5, [0.2, 0.0, 0.0, 0.1]) == 4
    assert prechelt_stop("GL", 5, [0.2, 0.0, 0.0, 0.0]) is None
    # a strip whose minimum is 0: no progress if it is all 0, unbounded progress otherwise
    assert training_progress([0.0, 0.0, 0.5, 0.0], k=2) == [None, 0.0, math.inf, math.inf]
    # PQ: an infinite GL stops whatever the progress; an infinite progress with finite GL never does
    assert prechelt_stop("PQ", 1, [0.0, 0.1], [0.3, 0.0], k=2) == 2
    assert prechelt_stop("PQ", 1, [0.2, 0.3], [0.3, 0.0], k=2) is None


def test_errors_must_be_non_negative_numbers():
    with pytest.raises(ValueError, match=r"val\[1\]"):
        generalization_loss([0.1, -0.1])
    with pytest.raises(TypeError, match=r"train\[0\]"):
        training_progress(["0.1"], k=1)
