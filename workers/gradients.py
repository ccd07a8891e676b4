"""A compact summary of a network's gradients, to tell why a configuration failed.

Vanishing gradients show as a tiny ``grad_ratio`` (first layer / last layer),
dead units as a large ``grad_zero_frac``, a too-large learning rate as a large
``update_ratio`` (how far one step moves the weights, relative to their size).
Usable from any workload: call :func:`summarize` after ``loss.backward()``, and
:func:`snapshot` / :func:`update_ratio` around ``optimizer.step()``.

Only weight matrices and convolution kernels count (parameters with two or more
dimensions), in the order the model registers them: biases and normalization
scales have gradients of a different nature and would blur the picture.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Keeps ratios finite when a denominator is exactly zero (a dead last layer, zero weights).
EPS = 1e-12
KEYS = ("grad_norm", "grad_first", "grad_last", "grad_ratio", "grad_zero_frac")
# A summary and the weight copy for ``update_ratio`` read every weight a few times:
# about 0.2-0.45 ms for a small MLP on a CPU, against about 0.7 ms for its whole
# step at batch 64, and hardly cheaper when fused (the passes over memory are the
# cost). Summarizing at most this many evenly spread steps an epoch, its start,
# middle and end, keeps it under 5% of the epoch at batch 64 and less at smaller
# batches (benchmarks/RESULTS.md, "gradient summary"); 16 cost about 20%.
SUMMARY_STEPS = 3


def weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices and kernels of ``model``'s layers, first layer first."""
    return [p for p in model.parameters() if p.ndim >= 2]


def summarize(model: nn.Module, *, zero_tol: float = 1e-8) -> dict[str, float]:
    """Global and first/last-layer gradient norms, and the share of near-zero entries.

    Call after ``backward()``; weights without a gradient are skipped, and a
    model with none gives an empty dict.
    """
    grads = [p.grad.detach() for p in weights(model) if p.grad is not None]
    if not grads:
        return {}
    norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
    zeros = torch.stack([(g.abs() < zero_tol).sum() for g in grads]).sum()
    total = sum(g.numel() for g in grads)
    first, last = norms[0], norms[-1]
    values = torch.stack(
        [torch.linalg.vector_norm(norms), first, last, first / (last + EPS), zeros / total]
    )
    return dict(zip(KEYS, values.tolist()))  # one transfer from the device, not five


def summary_every(steps: int | None) -> int:
    """Summarize every k-th of an epoch's ``steps``: at most ``SUMMARY_STEPS`` an epoch
    (every step when the count is unknown)."""
    return max(1, math.ceil((steps or 0) / SUMMARY_STEPS))


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the weights, to measure a step with :func:`update_ratio`."""
    return [p.detach().clone() for p in weights(model)]


def update_ratio(model: nn.Module, before: list[torch.Tensor]) -> float:
    """The largest ||w_after - w_before|| / ||w_before|| over the layers."""
    ratios = [
        torch.linalg.vector_norm(p.detach() - w) / (torch.linalg.vector_norm(w) + EPS)
        for p, w in zip(weights(model), before)
    ]
    return torch.stack(ratios).max().item() if ratios else 0.0


class EpochGradients:
    """Folds per-step summaries into one per epoch: the mean of each value,
    the max of ``update_ratio`` (one wild step matters more than the average)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.max_update: float | None = None

    def add(self, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def add_update(self, ratio: float) -> None:
        # A NaN step is exactly what should show, so it wins over any number.
        if self.max_update is None or math.isnan(ratio) or ratio > self.max_update:
            self.max_update = ratio

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        if self.max_update is not None:
            out["update_ratio"] = self.max_update
        return out
