"""The cost of watching training with a GradientReport, as a ratio to a plain training step.

Two identical MLPs (the book's size by default: 64 inputs, 3 hidden layers of 64 ReLU units, 10
classes, batches of 64) train side by side with SGD on the same random batch; one of them inside a
``GradientReport``. Steps are timed in blocks of ``report.every`` consecutive steps (one sampling
period, so every block holds exactly one step with statistics), plain and reported blocks
interleaved (their order alternating), and the ratio is the median over the rounds of reported
block time / plain block time. Interleaving makes the ratio robust to the machine's load changing
during the run.

Run ``python tools/report_overhead.py`` for the ratio against the budget (and at width 1024), or
call :func:`measure` (the bench tool does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from deepgrad.diagnostics import GradientReport
from deepgrad.models import MLP

#: The report may cost at most this many times a plain training step at the book's size.
BUDGET = 1.10


def _step(model, optimizer, x, y) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def measure(width: int = 64, depth: int = 3, batch: int = 64, rounds: int = 300, warmup: int = 5,
            every: int | None = None, seed: int = 0) -> dict:
    """Median ratio (reported / plain) of the time of a block of ``every`` training steps.

    Returns a dict with ``ratio`` (the median), ``mean_ratio`` (total reported time / total plain
    time), ``plain_step_s`` and ``report_step_s`` (median per-step times), ``every``, ``rounds``,
    ``width``, ``budget`` and ``within_budget``. ``every=None`` uses the report's default.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 64, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = MLP(64, 10, width=width, depth=depth, activation="relu")
        models.append((model, torch.optim.SGD(model.parameters(), lr=0.01)))
    (plain, plain_opt), (watched, watched_opt) = models
    report = GradientReport(watched) if every is None else GradientReport(watched, every=every)
    k = report.every
    plain_times, report_times = [], []

    def block(model, optimizer) -> float:
        start = time.perf_counter()
        for _ in range(k):
            _step(model, optimizer, x, y)
        return time.perf_counter() - start

    with report:
        for _ in range(warmup):
            block(plain, plain_opt), block(watched, watched_opt)
        for i in range(rounds):
            if i % 2:
                plain_times.append(block(plain, plain_opt))
                report_times.append(block(watched, watched_opt))
            else:
                report_times.append(block(watched, watched_opt))
                plain_times.append(block(plain, plain_opt))
    ratio = statistics.median(r / p for r, p in zip(report_times, plain_times, strict=True))
    return {
        "ratio": ratio,
        "mean_ratio": sum(report_times) / sum(plain_times),
        "plain_step_s": statistics.median(plain_times) / k,
        "report_step_s": statistics.median(report_times) / k,
        "every": k,
        "rounds": rounds,
        "width": width,
        "budget": BUDGET,
        "within_budget": ratio <= BUDGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--wide-rounds", type=int, default=12, help="rounds at width 1024")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    book = measure(rounds=args.rounds)
    print(f"GradientReport overhead (width 64, depth 3, batch 64, statistics every {book['every']} steps): "
          f"{book['ratio']:.2f}x a plain step (budget {BUDGET:.2f}x: "
          f"{'ok' if book['within_budget'] else 'OVER'}); mean {book['mean_ratio']:.2f}x; "
          f"plain step {1e6 * book['plain_step_s']:.0f} us")
    wide = measure(width=1024, rounds=args.wide_rounds, warmup=1)
    print(f"at width 1024: {wide['ratio']:.2f}x (mean {wide['mean_ratio']:.2f}x; "
          f"plain step {1e3 * wide['plain_step_s']:.1f} ms)")


if __name__ == "__main__":
    main()
