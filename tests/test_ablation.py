import math

import numpy as np
import pytest
import torch
from torch import nn

import deepgrad as dg
from deepgrad import ablation


@pytest.fixture(scope="module")
def digits():
    return dg.data.load_digits()


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "sigmod"}, "sigmod"),
    ({"init": "glorot"}, "init"),
    ({"norm": "group"}, "norm"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"lr": 0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"clip": 0.0}, "clip"),
    ({"clip": True}, "clip"),
])
def test_recipe_rejects_bad_choices_naming_them(kwargs, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        ablation.Recipe(**kwargs)


def test_but_changes_only_what_it_names():
    naive = ablation.Recipe()
    fixed = naive.but(activation="relu", init="he")
    assert (fixed.activation, fixed.init) == ("relu", "he")
    assert fixed.but(activation="sigmoid", init="naive") == naive
    assert naive.activation == "sigmoid"


@pytest.mark.parametrize("name, variance", [
    ("naive", lambda fan_in, fan_out: ablation.NAIVE_STD ** 2),
    ("xavier", lambda fan_in, fan_out: 2 / (fan_in + fan_out)),
    ("he", lambda fan_in, fan_out: 2 / fan_in),
])
def test_initializers_have_their_variance_and_zero_biases(name, variance):
    torch.manual_seed(0)
    layer = nn.Linear(400, 300)
    ablation.initializer(name)(layer)
    expected = variance(400, 300)
    assert layer.weight.var().item() == pytest.approx(expected, rel=0.02)
    assert abs(layer.weight.mean().item()) < 0.02 * math.sqrt(expected)
    assert torch.count_nonzero(layer.bias) == 0


def test_default_initializer_is_pytorchs():
    assert ablation.initializer("default") is None
    with pytest.raises(ValueError, match="init"):
        ablation.initializer("orthogonal")


def test_build_follows_the_recipe_and_the_seed(digits):
    recipe = ablation.Recipe(activation="relu", init="he", norm="batch", residual=True)
    a = ablation.build(recipe, digits, depth=4, width=16, seed=3)
    b = ablation.build(recipe, digits, depth=4, width=16, seed=3)
    assert a.depth == 4 and a.activation_name == "relu" and a.residual and a.norm == "batch"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = ablation.build(recipe, digits, depth=4, width=16, seed=4)
    assert not torch.equal(a.hidden[1].linear.weight, c.hidden[1].linear.weight)


def test_optimizer_matches_the_recipe(digits):
    model = ablation.build(ablation.Recipe(), digits, depth=2, width=8)
    sgd = ablation.optimizer(ablation.Recipe(lr=0.3), model)
    adam = ablation.optimizer(ablation.Recipe(optimizer="adam", lr=1e-3), model)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["lr"] == 0.3 and sgd.defaults["momentum"] == 0
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 1e-3


def test_run_diagnoses_trains_and_tests(digits):
    out = ablation.run(ablation.Recipe(activation="relu", init="he"), digits, depth=3, width=32, steps=60,
                       diagnose_steps=5)
    assert out.steps == 60 and out.report.steps == 5
    assert out.verdict == "healthy" and 0.1 < out.gradient_ratio < 10
    assert out.test_accuracy > 0.5
    _, acc = dg.train.evaluate(out.model, digits.test)
    assert acc == out.test_accuracy


def test_the_naive_deep_network_is_diagnosed_as_vanishing(digits):
    out = ablation.run(ablation.Recipe(), digits, depth=6, width=32, steps=20, diagnose_steps=5)
    assert out.verdict.startswith("vanishing") and out.gradient_ratio < 1e-6
    assert out.test_accuracy < 0.2


def test_run_is_deterministic(digits):
    recipe = ablation.Recipe(activation="tanh", init="xavier", clip=1.0)
    a = ablation.run(recipe, digits, depth=3, width=16, steps=30, diagnose_steps=3)
    b = ablation.run(recipe, digits, depth=3, width=16, steps=30, diagnose_steps=3)
    assert a.history.train_loss == b.history.train_loss and a.test_accuracy == b.test_accuracy


def test_early_stopping_restores_the_best_model(digits):
    # a learning rate so large that validation loss gets worse: the run stops and keeps the best weights
    recipe = ablation.Recipe(activation="relu", init="he", lr=2.0, early_stopping=True)
    out = ablation.run(recipe, digits, depth=3, width=32, steps=400, eval_every=10, patience=2,
                       diagnose_steps=2)
    assert out.steps < 400
    finite = [v for v in out.history.val_loss[1:] if math.isfinite(v)]
    loss, _ = dg.train.evaluate(out.model, digits.val)
    assert loss == pytest.approx(min(finite))


def test_steps_to_reads_the_history():
    history = dg.train.History(train_loss=[1.0] * 30, eval_steps=[0, 10, 20, 30],
                               val_loss=[2, 1, 0.5, 0.4], val_accuracy=[0.1, 0.5, 0.92, 0.95])
    out = ablation.Outcome(ablation.Recipe(), history, None, 0.9, None)
    assert out.steps_to(0.9) == 20 and out.steps_to(0.5) == 10 and out.steps_to(0.99) is None
    assert out.steps == 30


def test_greedy_layerwise_trains_every_layer_and_unfreezes(digits):
    model = ablation.build(ablation.Recipe(init="xavier"), digits, depth=3, width=32)
    before = [p.detach().clone() for p in model.parameters()]
    accuracies = ablation.greedy_layerwise(model, digits, steps_per_layer=40, lr=1.0)
    assert len(accuracies) == 4 and accuracies[0] > 0.5
    assert all(p.requires_grad for p in model.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    _, acc = dg.train.evaluate(model, digits.val)
    assert acc == accuracies[-1]


def test_greedy_layerwise_freezes_the_layers_below(digits, monkeypatch):
    model = ablation.build(ablation.Recipe(init="xavier"), digits, depth=3, width=16)
    seen = []
    real_fit = ablation.fit

    def spy(stage, data, optimizer, **kwargs):
        in_stage = {id(p) for p in stage.parameters() if p.requires_grad}
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert in_stage == optimised  # what the stage can train is what the optimiser updates
        seen.append([all(id(p) in in_stage for p in layer.parameters()) for layer in model.hidden])
        return real_fit(stage, data, optimizer, **kwargs)

    monkeypatch.setattr(ablation, "fit", spy)
    ablation.greedy_layerwise(model, digits, steps_per_layer=2, lr=0.1)
    assert seen == [[True, False, False], [False, True, False], [False, False, True], [False, False, False]]


@pytest.mark.parametrize("kwargs, match", [({"steps_per_layer": 0}, "steps_per_layer"),
                                           ({"lr": 0.0}, "lr")])
def test_greedy_layerwise_checks_its_arguments(digits, kwargs, match):
    model = ablation.build(ablation.Recipe(), digits, depth=2, width=8)
    args = {"steps_per_layer": 1, "lr": 0.1} | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        ablation.greedy_layerwise(model, digits, **args)


def test_markdown_table_has_one_row_per_outcome(digits):
    history = dg.train.History(train_loss=[1.0] * 20, eval_steps=[0, 10, 20],
                               val_loss=[2, 1, 0.5], val_accuracy=[0.1, 0.5, 0.95])

    class Report:  # the two things the table reads from a GradientReport
        layers = [type("Layer", (), {"relative_grad": 3.2e-7})()]
        verdict = type("Verdict", (), {"headline": "vanishing at layer 4 and below"})()

    good = ablation.Outcome(ablation.Recipe(), history, Report(), 0.9375, None)
    bad = ablation.Outcome(ablation.Recipe(), dg.train.History(train_loss=[1.0], eval_steps=[0], val_loss=[2.0],
                                                               val_accuracy=[0.1], diverged_at=1),
                           Report(), 0.1, None)
    table = ablation.markdown_table({"good": good, "bad": bad}, target=0.9).splitlines()
    assert len(table) == 4 and "steps to 90%" in table[0]
    assert "δ¹ / δ at last hidden layer" in table[0]
    assert table[2] == "| good | 93.8% | 20 | 3.2 × 10⁻⁷ | vanishing at layer 4 and below |"
    assert table[3].startswith("| bad | 10.0% | diverged |")
    with pytest.raises(ValueError, match="target"):
        ablation.markdown_table({}, target=90)


def test_library_calls_leave_the_global_generator_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    recipe = ablation.Recipe(activation="relu", init="he", lr=0.5)
    model = ablation.build(recipe, digits, depth=2, width=8, seed=4)
    ablation.diagnose(recipe, digits, depth=2, width=8, steps=2, seed=4)
    out = ablation.run(recipe, digits, depth=2, width=8, steps=4, diagnose_steps=2, seed=4)
    ablation.greedy_layerwise(model, digits, steps_per_layer=2, lr=0.1, seed=4)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads
    # the seed alone decides the weights and the run
    torch.manual_seed(999)
    again = ablation.run(recipe, digits, depth=2, width=8, steps=4, diagnose_steps=2, seed=4)
    assert again.history.train_loss == out.history.train_loss
    first, second = (ablation.build(recipe, digits, depth=2, width=8, seed=s) for s in (4, 4))
    other = ablation.build(recipe, digits, depth=2, width=8, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert not torch.equal(first.output.weight, other.output.weight)


def test_steps_to_target_matches_run_and_censors(digits):
    recipe = ablation.Recipe(activation="relu", init="he")
    out = ablation.run(recipe, digits, depth=2, width=32, steps=60, eval_every=5, diagnose_steps=1, seed=3)
    got = ablation.steps_to_target(recipe, digits, 3, depth=2, width=32, steps=60, target=0.5, eval_every=5)
    assert out.steps_to(0.5) is not None and got == out.steps_to(0.5)
    never = ablation.steps_to_target(ablation.Recipe(), digits, 0, depth=2, width=8, steps=10, target=1.0,
                                     eval_every=5)
    assert never == 15.0
    with pytest.raises(ValueError, match="eval_every"):
        ablation.steps_to_target(recipe, digits, 0, depth=2, width=8, steps=10, target=0.5, eval_every=0)


# ---- the critical initialisation ------------------------------------------------------------------

def _chi_at_fixed_point(weight_var: float, activation) -> float:
    """χ(q*) = σ_w² E[φ'(z)²], z ~ N(0, q*), q* = σ_w² E[φ(z)²] (zero biases), by Gauss-Hermite
    quadrature and fixed-point iteration: a computation independent of deepgrad.propagation."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)   # even: no node at 0, where ReLU's slope jumps
    weights = weights / weights.sum()
    phi = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0)}[activation]
    slope = {"sigmoid": lambda z: phi(z) * (1 - phi(z)), "relu": lambda z: (z > 0).astype(float)}[activation]
    q = 1.0
    for _ in range(500):
        q = weight_var * np.sum(weights * phi(np.sqrt(q) * nodes) ** 2)
    return weight_var * np.sum(weights * slope(np.sqrt(q) * nodes) ** 2)


def test_critical_init_puts_the_sigmoid_stack_at_chi_one(digits):
    model = ablation.build(ablation.Recipe(init="critical"), digits, depth=6, width=256, seed=1)
    for layer in model.linear_layers():
        fan_in = layer.in_features
        weight_var = layer.weight.var().item() * fan_in     # empirical σ_w²
        assert 80 < weight_var < 130
        assert torch.count_nonzero(layer.bias) == 0
    hidden = model.hidden[2].linear
    weight_var = hidden.weight.var().item() * hidden.in_features
    assert _chi_at_fixed_point(weight_var, "sigmoid") == pytest.approx(1.0, abs=0.05)
    # Glorot's scale (σ_w² = 1 at equal fans) is far below it for the sigmoid
    assert _chi_at_fixed_point(1.0, "sigmoid") < 0.1


def test_critical_init_is_he_for_relu():
    torch.manual_seed(0)
    a = nn.Linear(300, 200)
    ablation.initializer("critical", "relu")(a)
    torch.manual_seed(0)
    b = nn.Linear(300, 200)
    ablation.initializer("he")(b)
    assert torch.allclose(a.weight, b.weight, rtol=1e-5, atol=0)
    assert a.weight.var().item() == pytest.approx(2 / 300, rel=0.03)
    assert _chi_at_fixed_point(2.0, "relu") == pytest.approx(1.0, abs=1e-3)


def test_critical_init_needs_a_known_activation():
    with pytest.raises(ValueError, match="activation"):
        ablation.initializer("critical")
    with pytest.raises((ValueError, KeyError), match="sigmod"):
        ablation.initializer("critical", "sigmod")
    assert ablation.initializer("xavier", "sigmoid") is not None   # the others ignore it


# ---- training without diagnosis, the pool, comparisons over seeds ---------------------------------

def test_train_is_run_without_the_report(digits):
    recipe = ablation.Recipe(activation="relu", init="he", lr=0.2)
    out = ablation.train(recipe, digits, 2, depth=2, width=16, steps=20, eval_every=5)
    ran = ablation.run(recipe, digits, depth=2, width=16, steps=20, eval_every=5, diagnose_steps=2, seed=2)
    assert out.report is None and out.seed == 2 and ran.seed == 2
    assert out.history.train_loss == ran.history.train_loss and out.test_accuracy == ran.test_accuracy
    added = ablation.with_report(out, digits, depth=2, width=16, steps=2)
    assert added.report.steps == 2 and added.history is out.history
    assert added.gradient_ratio == ran.report.layers[0].relative_grad


def test_censored_steps_to():
    history = dg.train.History(train_loss=[1.0] * 30, eval_steps=[0, 10, 20, 30],
                               val_loss=[2, 1, 0.5, 0.4], val_accuracy=[0.1, 0.5, 0.92, 0.95])
    out = ablation.Outcome(ablation.Recipe(), history, None, 0.9, None)
    assert out.censored_steps_to(0.9, steps=30, eval_every=10) == 20.0
    assert out.censored_steps_to(0.99, steps=30, eval_every=10) == 40.0
    diverged = dg.train.History(train_loss=[1.0], eval_steps=[0], val_loss=[2.0], val_accuracy=[0.1],
                                diverged_at=1)
    assert math.isinf(ablation.Outcome(ablation.Recipe(), diverged, None, 0.1, None)
                      .censored_steps_to(0.9, steps=30, eval_every=10))


def test_pool_matches_train_in_and_out_of_process(digits):
    recipes = [ablation.Recipe(activation="relu", init="he", lr=0.2), ablation.Recipe(init="critical")]
    jobs = [(r, s) for r in recipes for s in (0, 1)]
    settings = dict(depth=2, width=8, steps=6, eval_every=3)
    here = ablation.Pool(digits)(jobs, **settings)
    with ablation.Pool(digits, workers=2) as pool:
        there = pool(jobs, **settings)
        again = pool(jobs[:1], **settings)    # the workers serve a second call
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        direct = [ablation.train(r, digits, s, **settings) for r, s in jobs]
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(here, there, direct, strict=True):
        assert a.history.train_loss == b.history.train_loss == c.history.train_loss
        assert a.test_accuracy == b.test_accuracy == c.test_accuracy
        assert (a.recipe, a.seed) == (b.recipe, b.seed) == (c.recipe, c.seed)
    assert again[0].history.train_loss == there[0].history.train_loss
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("jobs, error", [([(ablation.Recipe(), "0")], TypeError),
                                         ([ablation.Recipe()], TypeError),
                                         ([(ablation.Recipe(), True)], TypeError)])
def test_pool_rejects_bad_jobs(digits, jobs, error):
    with pytest.raises(error, match="jobs"):
        ablation.Pool(digits)(jobs, depth=2, width=8, steps=2)
    with pytest.raises(ValueError, match="workers"):
        ablation.Pool(digits, workers=0)
    with pytest.raises(ValueError, match="steps"):
        ablation.Pool(digits)([], depth=2, width=8, steps=0)


def _outcome(recipe, seed, reached_at, accuracy):
    """An outcome whose validation accuracy first reaches 0.9 at ``reached_at`` (None: never) of 20 steps."""
    steps = [0, 5, 10, 15, 20]
    val = [0.95 if reached_at is not None and s >= reached_at else 0.5 for s in steps]
    history = dg.train.History(train_loss=[1.0] * 20, eval_steps=steps, val_loss=[1.0] * 5, val_accuracy=val)
    return ablation.Outcome(recipe, history, None, accuracy, None, seed)


def test_consecutive_pairs_each_rung_with_the_one_before():
    a, b, c = (ablation.Recipe(lr=lr) for lr in (0.1, 0.2, 0.3))
    rungs = {"A": [_outcome(a, s, r, acc) for s, r, acc in [(0, 20, 0.90), (1, None, 0.80), (2, 15, 0.85)]],
             "B": [_outcome(b, s, r, acc) for s, r, acc in [(0, 10, 0.92), (1, 15, 0.84), (2, 15, 0.85)]],
             "C": [_outcome(c, s, r, acc) for s, r, acc in [(0, 5, 0.91), (1, 5, 0.86), (2, 10, 0.90)]]}
    cmp = ablation.consecutive(rungs, target=0.9, steps=20, eval_every=5)
    assert list(cmp) == ["B", "C"]
    speed, accuracy = cmp["B"]
    assert speed.names == ("B", "A") and speed.a == (10.0, 15.0, 15.0) and speed.b == (20.0, 25.0, 15.0)
    assert (speed.wins, speed.wins_b) == (2, 0) and speed.mean_difference == pytest.approx(-20 / 3)
    assert accuracy.better == "higher" and accuracy.a == (0.92, 0.84, 0.85) and accuracy.wins == 2
    expected = dg.evidence.from_values([5, 5, 10], [10, 15, 15], seeds=[0, 1, 2], names=("C", "B"))
    assert cmp["C"][0] == expected
    table = ablation.consecutive_table(rungs, target=0.9, steps=20, eval_every=5).splitlines()
    assert len(table) == 5 and "(of 3 seeds)" in table[0]
    assert table[2] == "| A | 0.1 | 20 |  |  |  | 85.0% |  |"
    assert table[3].startswith("| B | 0.2 | 15 | 2 / 0 | −7 (") and "| 0.5 |" in table[3]
    assert "| 87.0% | +2.0 (" in table[3] and table[2].count("|") == table[3].count("|")
    rungs["C"] = rungs["C"][::-1]
    with pytest.raises(ValueError, match="same seeds"):
        ablation.consecutive(rungs, target=0.9, steps=20, eval_every=5)


def test_fastest_ranks_by_steps_then_final_accuracy_then_the_lower_rate():
    def out(lr, reached_at, final):
        o = _outcome(ablation.Recipe(lr=lr), 0, reached_at, 0.9)
        o.history.val_accuracy[-1] = final
        return o

    settings = dict(target=0.9, steps=20, eval_every=5)
    assert ablation.fastest([out(0.1, 15, 0.95), out(0.3, 10, 0.91), out(1.0, None, 0.5)], **settings) == 1
    assert ablation.fastest([out(0.1, 10, 0.93), out(0.3, 10, 0.96)], **settings) == 1   # tie: more accurate
    assert ablation.fastest([out(0.3, 10, 0.95), out(0.1, 10, 0.95)], **settings) == 1   # tie: lower rate
    never = out(0.1, None, 0.6)
    diverged = out(0.3, None, float("nan"))
    diverged.history.diverged_at = 3
    assert ablation.fastest([diverged, never], **settings) == 1   # a diverged run ranks last
    with pytest.raises(ValueError, match="outcomes"):
        ablation.fastest([], **settings)
