import pytest
import torch
from sklearn.datasets import load_digits

from deepgrad import data


def test_digits_split_is_fixed_disjoint_and_complete():
    d = data.load_digits()
    assert (len(d.train), len(d.val), len(d.test)) == (1077, 360, 360)
    assert (d.n_features, d.n_classes) == (64, 10)
    again = data.load_digits()
    assert torch.equal(d.train.x, again.train.x) and torch.equal(d.test.y, again.test.y)
    labels = torch.cat([d.train.y, d.val.y, d.test.y])
    full = torch.as_tensor(load_digits().target)
    assert torch.equal(torch.bincount(labels), torch.bincount(full))  # every image used exactly once


def test_digits_split_ignores_the_global_seed():
    torch.manual_seed(123)
    a = data.load_digits()
    torch.manual_seed(456)
    assert torch.equal(a.val.x, data.load_digits().val.x)


def test_digits_are_standardised_on_the_training_part():
    d = data.load_digits()
    mean, std = d.train.x.mean(0), d.train.x.std(0)
    varying = std > 0
    torch.testing.assert_close(mean, torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    raw = data.load_digits(standardize=False)
    assert raw.train.x.min() == 0 and raw.train.x.max() == 16


def test_split_is_stratified():
    d = data.load_digits()
    counts = torch.bincount(d.test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_dtype_and_device():
    d = data.load_digits(dtype=torch.float64, device="cpu")
    assert d.train.x.dtype == torch.float64 and d.train.y.dtype == torch.long
    assert d.to("cpu").train.x.device.type == "cpu"


def test_spirals():
    s = data.spirals(100, classes=3, noise=0.0)
    n = len(s.train) + len(s.val) + len(s.test)
    assert n == 300 and s.n_features == 2 and s.n_classes == 3
    radii = torch.cat([s.train.x, s.val.x, s.test.x]).norm(dim=1)
    assert radii.max() <= 1.0 + 1e-6


def test_batches_cover_an_epoch_once():
    d = data.load_digits()
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in data.batches(d.train, 100, generator=g)])
    assert len(seen) == len(d.train)
    assert torch.equal(torch.bincount(seen, minlength=10), torch.bincount(d.train.y, minlength=10))
    sizes = [len(y) for _, y in data.batches(d.train, 100, drop_last=True)]
    assert sizes == [100] * 10


def test_batches_are_reproducible_with_a_seeded_generator():
    d = data.load_digits()
    first = [y for _, y in data.batches(d.train, 64, generator=torch.Generator().manual_seed(3))]
    second = [y for _, y in data.batches(d.train, 64, generator=torch.Generator().manual_seed(3))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


class TestBadArguments:
    def test_fractions_too_large(self):
        with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
            data.load_digits(val_fraction=0.5, test_fraction=0.5)

    @pytest.mark.parametrize("value", [0, 1, -0.1])
    def test_fraction_outside_unit_interval(self, value):
        with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
            data.load_digits(val_fraction=value)

    def test_batch_size(self):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
            next(data.batches(data.load_digits().train, 0))

    def test_spiral_classes(self):
        with pytest.raises(ValueError, match="classes must be an int >= 2, got 1"):
            data.spirals(classes=1)

    def test_spiral_noise(self):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            data.spirals(noise=-1.0)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
    def test_non_floating_dtype_is_refused_not_truncated(self, dtype):
        # torch.int64 used to turn the z-scores into integers (0.7 -> 0) without a word
        with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype.*got torch."):
            data.load_digits(dtype=dtype)
        with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
            data.spirals(dtype=dtype)

    @pytest.mark.parametrize("dtype", ["float32", float, None])
    def test_dtype_must_be_a_torch_dtype(self, dtype):
        with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
            data.load_digits(dtype=dtype)

    def test_every_floating_dtype_is_accepted(self):
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            assert data.load_digits(dtype=dtype).train.x.dtype == dtype


def test_adding_problem_marks_one_value_in_each_half_and_sums_them():
    x, y = data.adding_problem(200, 10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (200, 10, 2) and y.shape == (200,) and x.dtype == torch.float32
    marks = x[..., 1]
    assert torch.equal(marks.sum(1), torch.full((200,), 2.0))
    assert torch.equal(marks[:, :5].sum(1), torch.ones(200))  # one marker in each half
    torch.testing.assert_close(y, (x[..., 0] * marks).sum(1))
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    again = data.adding_problem(200, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])


def test_adding_problem_baseline_is_one_sixth():
    _, y = data.adding_problem(100_000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(((y - 1) ** 2).mean().item() - 1 / 6) < 0.005


@pytest.mark.parametrize("length", [4, 10, 40])
def test_adding_problem_marker_blind_error(length):
    # The best predictor that ignores the markers, the sum of the halves' mean values, has error
    # (1/6)(1 - 2/length) (recurrent chapter); checked by simulation to 4 standard errors.
    x, y = data.adding_problem(200_000, length, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    half = length // 2
    blind = x[:, :half, 0].mean(1) + x[:, half:, 0].mean(1)
    sq = (y - blind) ** 2
    stderr = sq.std().item() / len(sq) ** 0.5
    assert abs(sq.mean().item() - (1 - 2 / length) / 6) < 4 * stderr
    # and no marker-blind predictor beats it: the residual is uncorrelated with the values
    resid = y - blind
    for j in (0, half - 1, half, length - 1):
        assert abs(torch.corrcoef(torch.stack([resid, x[:, j, 0]]))[0, 1].item()) < 0.02


def test_delayed_copies_are_the_signal_shifted():
    u, targets = data.delayed_copies(50, 4, generator=torch.Generator().manual_seed(0))
    assert u.shape == (50,) and targets.shape == (50, 4)
    for d in range(1, 5):
        assert torch.equal(targets[d:, d - 1], u[:-d])
    assert (u.abs() <= 1).all()


def test_sequence_task_arguments():
    with pytest.raises(ValueError, match="length must be an int >= 2, got 1"):
        data.adding_problem(3, 1)
    with pytest.raises(ValueError, match="delays must be an int >= 1, got 0"):
        data.delayed_copies(5, 0)
