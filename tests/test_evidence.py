import functools
import math

import numpy as np
import pytest
import torch

import deepgrad as dg
from deepgrad import evidence


# Module-level arms (a worker process imports them from here)
def toy_loss(seed: int, shift: float = 0.0) -> float:
    """A seeded 'final loss': a small matrix product, so that threads and processes could matter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 64, generator=g, dtype=torch.float32)
    return float((x @ x).abs().mean()) + shift


def noisy(seed: int, mean: float, spread: float) -> float:
    return mean + spread * float(np.random.default_rng(seed).standard_normal())


def test_clear_win_for_a_when_lower_is_better():
    c = evidence.from_values([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.4, 3.6, 4.5, 5.5], better="lower")
    assert c.wins == 5 and c.wins_b == 0 and c.n == 5
    assert c.differences == pytest.approx((-0.5, -0.4, -0.6, -0.5, -0.5))
    assert c.mean_difference == pytest.approx(-0.5)
    assert c.high < 0 and c.verdict == "A better" and c.winner == "A"
    assert not c.illustration


def test_clear_loss_when_higher_is_better():
    a = [0.80, 0.82, 0.79, 0.81, 0.80, 0.83]
    b = [0.90, 0.91, 0.92, 0.90, 0.93, 0.91]
    c = evidence.from_values(a, b, better="higher", names=("plain", "batch norm"))
    assert c.wins == 0 and c.wins_b == 6
    assert c.verdict == "batch norm better" and c.winner == "batch norm"
    assert c.sentence() == ("batch norm higher on 6 of 6 seeds; mean difference (plain − batch norm) −0.10 "
                            "(95 % interval −0.12 to −0.088): batch norm better.")


def test_direction_flips_the_verdict_not_the_numbers():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    low, high = evidence.from_values(a, b, better="lower"), evidence.from_values(a, b, better="higher")
    assert (low.mean_difference, low.low, low.high) == (high.mean_difference, high.low, high.high) == (-1, -1, -1)
    assert low.verdict == "A better" and high.verdict == "B better"


def test_tie_when_the_interval_covers_zero():
    c = evidence.from_values([1.0, 2.0, 3.0, 4.0, 5.0], [1.2, 1.9, 3.1, 3.8, 5.05])
    assert c.low < 0 < c.high
    assert c.verdict == "tied" and c.winner is None
    assert c.wins == 3 and c.wins_b == 2


def test_identical_arms_give_the_degenerate_interval_and_a_tie():
    values = [0.3, 0.1, 0.7, 0.2, 0.5]
    c = evidence.from_values(values, values)
    assert (c.mean_difference, c.low, c.high) == (0.0, 0.0, 0.0)
    assert c.verdict == "tied" and c.wins == c.wins_b == 0
    assert c.sentence() == ("A lower on 0 of 5 seeds, B on 0; mean difference (A − B) 0 "
                            "(95 % interval 0 to 0): no difference detected.")


def test_constant_nonzero_difference_is_a_degenerate_interval_that_excludes_zero():
    c = evidence.from_values([1.0, 5.0, 9.0], [1.25, 5.25, 9.25])
    assert c.low == c.high == c.mean_difference == -0.25 and c.verdict == "A better"


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_seeds_is_refused(n):
    with pytest.raises(ValueError, match=r"seeds: a winner cannot be stated from \d seed"):
        evidence.from_values([1.0] * n, [2.0] * n)
    with pytest.raises(ValueError, match=r"seeds: a winner cannot be stated from \d seed"):
        evidence.compare(toy_loss, toy_loss, seeds=n)
    with pytest.raises(ValueError, match=r"seeds: a winner cannot be stated from \d seed"):
        evidence.compare(toy_loss, toy_loss, seeds=list(range(n)))


def test_fewer_than_five_seeds_is_called_an_illustration():
    assert evidence.MIN_SEEDS == 5
    c = evidence.from_values([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0])
    assert c.illustration and c.sentence().endswith("(an illustration: claims need at least 5 seeds).")
    c5 = evidence.from_values([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0, 6.0])
    assert not c5.illustration and "illustration" not in c5.sentence()


def test_bootstrap_interval_matches_a_direct_numpy_computation():
    d = np.array([0.3, -0.1, 0.25, 0.4, 0.05, 0.12, -0.02])
    rng = np.random.default_rng(7)
    means = np.empty(2000)
    for r in range(2000):  # one resample at a time, as the textbook describes it
        means[r] = d[rng.integers(0, d.size, size=d.size)].mean()
    expected = np.percentile(means, [2.5, 97.5])
    assert evidence.bootstrap_interval(d, resamples=2000, seed=7) == pytest.approx(tuple(expected), abs=1e-15)
    c = evidence.from_values(d, np.zeros_like(d), resamples=2000, bootstrap_seed=7)
    assert (c.low, c.high) == pytest.approx(tuple(expected), abs=1e-15)
    assert c.mean_difference == pytest.approx(d.mean())


def test_bootstrap_is_deterministic_and_leaves_the_global_rng_alone():
    np.random.seed(3)
    before = np.random.random()
    np.random.seed(3)
    first = evidence.bootstrap_interval([0.1, 0.5, -0.2, 0.3])
    assert np.random.random() == before
    assert evidence.bootstrap_interval([0.1, 0.5, -0.2, 0.3]) == first


def test_level_widens_the_interval():
    d = [0.3, -0.1, 0.25, 0.4, 0.05, 0.12]
    lo90, hi90 = evidence.bootstrap_interval(d, level=0.9)
    lo99, hi99 = evidence.bootstrap_interval(d, level=0.99)
    assert lo99 < lo90 and hi90 < hi99


def test_diverged_runs_lose_and_are_left_out_of_the_mean():
    a = [1.0, math.nan, 3.0, 4.0, 5.0]
    b = [1.5, 2.5, math.inf, 4.5, 5.5]
    c = evidence.from_values(a, b, names=("clipped", "plain"))
    assert c.diverged_a == 1 and c.diverged_b == 1 and c.finished == 3
    assert c.wins == 4 and c.wins_b == 1  # seed 1: A diverged, B wins; seed 2: B diverged, A wins
    assert math.isnan(c.differences[1]) and math.isnan(c.differences[2])
    assert c.mean_difference == pytest.approx(-0.5) and c.low == c.high == pytest.approx(-0.5)
    assert c.verdict == "clipped better"  # equal divergence counts: the interval decides
    text = c.sentence()
    assert "clipped diverged on 1 of 5; plain diverged on 1 of 5" in text
    assert "over the 3 seeds both finished" in text


def test_the_arm_that_diverged_more_often_loses_whatever_the_interval():
    a = [1.0, 2.0, 3.0, math.nan, math.nan]  # better on every finished seed, but blew up twice
    b = [1.5, 2.5, 3.5, 4.5, 5.5]
    c = evidence.from_values(a, b)
    assert c.high < 0 and c.verdict == "B better"
    assert c.wins == 3 and c.wins_b == 2


def test_every_run_diverged():
    c = evidence.from_values([math.nan] * 3, [math.inf] * 3)
    assert c.finished == 0 and math.isnan(c.mean_difference) and c.verdict == "tied"
    assert c.wins == c.wins_b == 0
    assert "mean difference" not in c.sentence()


def test_compare_pairs_the_seeds_and_calls_each_arm_once_per_seed():
    c = evidence.compare(functools.partial(noisy, mean=1.0, spread=0.1),
                         functools.partial(noisy, mean=1.3, spread=0.1), seeds=[3, 5, 8, 13, 21])
    assert c.seeds == (3, 5, 8, 13, 21)
    assert c.a == tuple(noisy(s, 1.0, 0.1) for s in c.seeds)
    # paired: the same seed gives both arms the same noise, so every difference is exactly -0.3
    assert c.differences == pytest.approx((-0.3,) * 5)
    assert c.verdict == "A better" and c.wins == 5


def test_compare_runs_each_call_with_one_thread_and_restores_the_count():
    seen = []
    threads = torch.get_num_threads()

    def arm(seed):
        seen.append(torch.get_num_threads())
        return float(seed)

    evidence.compare(arm, arm, seeds=2)
    assert seen == [1] * 4 and torch.get_num_threads() == threads


def test_two_workers_give_the_same_result_as_one():
    a, b = toy_loss, functools.partial(toy_loss, shift=0.01)
    one = evidence.compare(a, b, seeds=4, workers=1)
    two = evidence.compare(a, b, seeds=4, workers=2)
    assert one == two  # frozen dataclass: every value, seed and interval bit for bit


def test_workers_refuse_lambdas_and_local_functions_before_running():
    def local(seed):
        return 0.0

    with pytest.raises(ValueError, match="a is a lambda .*module-level function.*workers=1"):
        evidence.compare(lambda s: 0.0, toy_loss, seeds=2, workers=2)
    with pytest.raises(ValueError, match="b is a lambda or a function defined inside another function"):
        evidence.compare(toy_loss, local, seeds=2, workers=2)
    # the same functions are fine in-process
    assert evidence.compare(lambda s: 0.0, local, seeds=2).verdict == "tied"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"better": "smaller"}, ValueError, "better must be one of 'lower', 'higher'"),
    ({"seeds": 2.5}, TypeError, "seeds must be an int or a sequence of int"),
    ({"seeds": [1, 1, 2]}, ValueError, "seeds must be distinct"),
    ({"workers": 0}, ValueError, "workers must be an int >= 1"),
    ({"level": 1.5}, ValueError, "level must be in"),
    ({"names": ["a", "b"]}, TypeError, "names must be a tuple of two str"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        evidence.compare(toy_loss, toy_loss, **{"seeds": 3, **kwargs})


def test_arms_must_be_callable_and_values_paired():
    with pytest.raises(TypeError, match="a must be a callable taking a seed"):
        evidence.compare(0.5, toy_loss)
    with pytest.raises(ValueError, match="a and b must hold one value per seed each, got 3 and 2"):
        evidence.from_values([1.0, 2.0, 3.0], [1.0, 2.0])


def test_result_is_frozen_and_exported():
    c = evidence.from_values([1.0, 2.0], [2.0, 3.0])
    with pytest.raises(AttributeError):
        c.low = 0.0
    assert dg.evidence is evidence


def test_sign_flip_p_is_the_exact_randomisation_test():
    import itertools

    import numpy as np

    from deepgrad import evidence

    a, b = [0.31, 0.28, 0.35, 0.30, 0.33], [0.30, 0.29, 0.31, 0.27, 0.32]
    cmp = evidence.from_values(a, b)
    d = np.subtract(a, b)
    brute = np.mean([abs(np.mean(np.multiply(s, d))) >= abs(d.mean()) - 1e-15
                     for s in itertools.product([-1, 1], repeat=5)])
    assert cmp.sign_flip_p == pytest.approx(brute)
    # five wins out of five: the bootstrap interval excludes 0, but p cannot go below 2/32
    sure = evidence.from_values([1.0, 1.1, 1.2, 1.3, 1.4], [0.0] * 5)
    assert sure.low > 0 and sure.sign_flip_p == pytest.approx(2 / 32)
    # identical arms: every pattern ties with the observed mean of 0
    assert evidence.from_values([0.5] * 5, [0.5] * 5).sign_flip_p == 1.0
    # diverged seeds are left out, as for the interval
    partial = evidence.from_values([1.0, float("nan"), 1.2, 1.3], [0.0, 0.0, 0.0, 0.0])
    assert partial.sign_flip_p == pytest.approx(2 / 8)


def test_sign_flip_p_for_many_seeds_is_estimated_and_deterministic():
    from deepgrad import evidence

    a = [1.0 + 0.01 * i for i in range(20)]
    cmp = evidence.from_values(a, [1.0] * 20)
    assert cmp.sign_flip_p == evidence.from_values(a, [1.0] * 20).sign_flip_p
    assert cmp.sign_flip_p < 1e-3
