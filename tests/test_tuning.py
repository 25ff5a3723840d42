"""deepgrad.tuning: the objective, the samplers, best-so-far curves, the schedules, Bergstra & Bengio."""

import math
import warnings

import numpy as np
import optuna
import pytest

import deepgrad as dg
from deepgrad import tuning

CONFIG = dict(n_layers=2, n_units=32, lr=0.05, batch_size=32, activation="relu")


@pytest.fixture(scope="module")
def task():
    return tuning.tuning_task(dg.data.load_digits(), train_size=256)


def test_best_so_far_is_the_running_minimum():
    assert tuning.best_so_far([3, 1, 2, 0.5, 4]) == [3, 1, 1, 0.5, 0.5]
    out = tuning.best_so_far([math.nan, 2, math.nan, 1])
    assert math.isnan(out[0]) and out[1:] == [2, 2, 1]


def test_tuning_task_keeps_val_and_checks_size():
    digits = dg.data.load_digits()
    small = tuning.tuning_task(digits, train_size=100)
    assert len(small.train) == 100 and small.val is digits.val
    with pytest.raises(ValueError, match="train_size"):
        tuning.tuning_task(digits, train_size=10_000)


def test_train_config_is_deterministic_and_learns(task):
    first = tuning.train_config(CONFIG, task, epochs=3)
    assert first == tuning.train_config(CONFIG, task, epochs=3)
    assert len(first) == 3 and first[-1] < 0.3 < 0.9
    assert first != tuning.train_config(CONFIG, task, epochs=3, seed=1)


def test_a_diverging_configuration_scores_chance(task):
    errors = tuning.train_config({**CONFIG, "lr": 1e6}, task, epochs=3)
    assert tuning.DIVERGED_ERROR in errors and len(errors) == 3


def test_schedule_with_constant_batch_is_train_config(task):
    """Two code paths, one computation: a constant schedule reproduces train_config bit for bit."""
    plain = tuning.train_config(CONFIG, task, epochs=3)
    assert tuning.train_schedule(CONFIG, task, batch_sizes=[32, 32, 32]) == plain
    assert tuning.train_schedule(CONFIG, task, batch_sizes=[32, 32, 32], cyclic=True) != plain
    assert tuning.train_progressive({**CONFIG, "n_layers": 1}, task, epochs_per_stage=3) == \
        tuning.train_config({**CONFIG, "n_layers": 1}, task, epochs=3)


def test_progressive_growth_freezes_the_earlier_layers(task, monkeypatch):
    seen = []
    original = tuning._train_epochs

    def spy(model, opt, *args, **kwargs):
        trainable = {id(p) for group in opt.param_groups for p in group["params"]}
        seen.append([any(id(p) in trainable for p in layer.parameters()) for layer in model.hidden])
        return original(model, opt, *args, **kwargs)

    monkeypatch.setattr(tuning, "_train_epochs", spy)
    errors = tuning.train_progressive({**CONFIG, "n_layers": 3}, task, epochs_per_stage=1)
    assert len(errors) == 3
    assert seen == [[True], [False, True], [False, False, True]]


def test_objective_memoises_and_charges_epochs(task):
    objective = tuning.Objective(task, epochs=2)
    values = []
    for _ in range(2):  # a one-point grid, searched twice
        point = {**CONFIG, "log2_units": 5}
        del point["n_units"]
        grid = optuna.samplers.GridSampler({k: [v] for k, v in point.items()})
        values += tuning.trial_values(tuning.run_search(objective, grid, n_trials=1))
    assert objective.trainings == 1 and objective.epochs_trained == 4
    assert values == [objective.errors(CONFIG)[-1]] * 2


def test_pruning_stops_trials_and_charges_only_the_epochs_used(task):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    objective = tuning.Objective(task, epochs=3, prune=True)
    study = tuning.run_search(objective, tuning.make_sampler("random", 0), 3, pruner=AlwaysPrune())
    assert objective.epochs_trained == 3
    assert all(math.isnan(v) for v in tuning.trial_values(study))


@pytest.mark.parametrize("name", tuning.SAMPLERS)
def test_samplers_are_seeded_and_silent(name, capfd):
    def params(seed):
        grid = {"x": [-2.0, 0.0, 2.0, 4.0], "y": [-1.0, 1.0]}
        sampler = tuning.make_sampler(name, seed, n_trials=8, grid=grid)
        study = tuning.run_search(tuning.quadratic, sampler, 8)
        return [t.params for t in study.trials]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ExperimentalWarning (GPSampler) would fail here
        first = params(0)
        assert first == params(0)
    assert first != params(1)  # the grid, too: its points come in a seeded order
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_default_grid_fits_the_budget():
    for n in (4, 8, 16, 24, 48):
        grid = tuning.default_grid(n)
        assert math.prod(len(v) for v in grid.values()) <= n
        assert set(grid) == set(tuning.PARAMS)
    assert len(tuning.default_grid(24)["lr"]) == 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="name"):
        tuning.make_sampler("annealing", 0)
    with pytest.raises(ValueError, match="storage"):
        tuning.open_storage("")
    with pytest.raises(TypeError, match="storage"):
        tuning.open_storage(3)
    with pytest.raises(ValueError, match="batch_sizes"):
        tuning.train_schedule(CONFIG, None, batch_sizes=[])


def test_low_dimensional_objective_formula():
    x = np.array([0.3, 0.5, 0.9])
    y = np.array([0.5, 0.0, 1.0])
    expected = 1 - np.exp(-(x - 0.3) ** 2 / (2 * 0.06 ** 2)) + 0.02 * (y - 0.5) ** 2
    assert np.allclose(tuning.low_dimensional_objective(x, y, 0.3), expected)
    assert tuning.low_dimensional_objective(np.array(0.3), np.array(0.5), 0.3) == 0


def test_random_search_beats_a_grid_of_the_same_size():
    """Bergstra & Bengio (2012): nine grid points test three values of x, nine random points nine."""
    gx, _ = tuning.grid_points(3)
    assert len(set(gx.tolist())) == 3
    best = tuning.grid_vs_random(per_axis=3, repeats=2000, seed=0)
    assert best["random"].mean() < 0.6 * best["grid"].mean()
    assert (best["random"] < best["grid"]).mean() > 0.5


def test_training_leaves_the_global_generator_alone(task):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = tuning.train_config(CONFIG, task, epochs=1, seed=5)
    tuning.train_schedule(CONFIG, task, batch_sizes=[32], seed=5)
    tuning.train_progressive(CONFIG, task, seed=5)
    assert torch.equal(torch.rand(3), expected)
    # and the seed alone decides the result, whatever the global state
    torch.manual_seed(999)
    assert tuning.train_config(CONFIG, task, epochs=1, seed=5) == first


def test_quasi_random_points_cover_the_important_axis_evenly():
    """Scrambled Halton points: 9 distinct x values, one in each ninth of the axis far more often
    than independent uniform points manage; the grid and random arms are unchanged by the new arm."""
    best = tuning.grid_vs_random(per_axis=3, repeats=500, seed=0)
    again = tuning.grid_vs_random(per_axis=3, repeats=500, seed=0)
    assert set(best) == {"grid", "random", "quasi-random"}
    for key in best:
        assert np.array_equal(best[key], again[key])
    assert best["quasi-random"].mean() < best["grid"].mean()
    assert best["quasi-random"].mean() < best["random"].mean()


def test_qmc_sampler_is_optunas_scrambled_halton():
    import optuna

    sampler = tuning.make_sampler("qmc", 3)
    assert isinstance(sampler, optuna.samplers.QMCSampler)
    assert sampler._qmc_type == "halton" and sampler._scramble and sampler._seed == 3
