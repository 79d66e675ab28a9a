"""The math every learner shares: the one-step target, the critics' regression loss on it
(METHOD.md sections 2 to 4), and the means of losses over a logging window."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def bellman_target(
    reward: torch.Tensor, done: torch.Tensor, gamma: float, next_value: torch.Tensor
) -> torch.Tensor:
    """y = r + gamma (1 - d) V(s'), with r already scaled and V(s') the algorithm's value of
    the next state (SAC's soft value, CPQ's safe-masked one, BEAR's and BCQ's soft-clipped)."""
    return reward + gamma * (1.0 - done) * next_value


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Q = sum_j E (Q_j(s, a) - y)^2 of a critic ensemble's values ``q`` (heads, B) on one
    target ``y`` (B,): L_Qr over the reward heads, L_Qc with the cost critic's single head."""
    return F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()


class MetricWindow:
    """Per-step losses and metrics summed over a logging window, on their device (no host sync
    per step), and their means when the window closes."""

    def __init__(self) -> None:
        self.totals: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        """One step's values."""
        for name, value in values.items():
            self.totals[name] = self.totals.get(name, 0.0) + value
        self.steps += 1

    def flush(self) -> dict[str, float]:
        """The mean of each value over the window's steps; the next window starts empty."""
        means = {name: float(total) / self.steps for name, total in self.totals.items()}
        self.totals, self.steps = {}, 0
        return means
