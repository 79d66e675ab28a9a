"""Lagrange-multiplier controllers behind one small interface (METHOD.md section 5).

A controller owns lambda. The agent reads ``controller.lam``; the training loop feeds it the mean
episode cost J_c of the latest rollout through ``update``. Controllers are separate from the
agents (OmniSafe's design) and, unlike OmniSafe's, carry their full state for checkpoints.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch


class LagrangeController(ABC):
    """The interface every controller implements."""

    def __init__(self, cost_limit: float) -> None:
        self.cost_limit = float(cost_limit)

    @property
    @abstractmethod
    def lam(self) -> float:
        """The current multiplier lambda >= 0."""

    @abstractmethod
    def update(self, episode_cost: float) -> float:
        """One controller step on J_c (mean episode cost of the latest rollout); returns lambda."""

    def terms(self) -> dict[str, float]:
        """Everything worth logging, under ``lagrange/`` names."""
        return {"lagrange/lambda": self.lam}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DualAscent(LagrangeController):
    """Gradient ascent on lambda (METHOD.md section 5, ``pid=dual``).

    Minimizes -lambda * (J_c - d) with a torch optimizer, then projects lambda to
    [0, lambda_max]. The released code uses Adam (which moves lambda by about ``lr`` per step,
    whatever the size of the error); SGD is the textbook form. Both are available.
    """

    def __init__(
        self,
        cost_limit: float,
        lr: float,
        lambda_init: float = 0.0,
        optimizer: str = "adam",
        lambda_max: float | None = None,
    ) -> None:
        super().__init__(cost_limit)
        self.lambda_max = lambda_max
        self._lam = torch.nn.Parameter(torch.tensor(float(lambda_init)))
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if optimizer not in optimizers:
            raise ValueError(f"unknown lambda optimizer {optimizer!r}; valid: {sorted(optimizers)}")
        self._optimizer = optimizers[optimizer]([self._lam], lr=lr)
        self._last_error = 0.0

    @property
    def lam(self) -> float:
        return float(self._lam.detach())

    def update(self, episode_cost: float) -> float:
        error = float(episode_cost) - self.cost_limit  # e = J_c - d
        self._optimizer.zero_grad(set_to_none=True)
        loss = -self._lam * error
        loss.backward()
        self._optimizer.step()
        with torch.no_grad():
            self._lam.clamp_(min=0.0, max=self.lambda_max)
        self._last_error = error
        return self.lam

    def terms(self) -> dict[str, float]:
        return {"lagrange/lambda": self.lam, "lagrange/error": self._last_error}

    def state_dict(self) -> dict[str, Any]:
        return {
            "lambda": self._lam.detach().clone(),
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
            "last_error": self._last_error,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self._lam.copy_(state["lambda"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._last_error = float(state["last_error"])


@dataclass
class ControllerConfig:
    """The ``pid`` config group (conf/pid/*.yaml)."""

    name: str = "dual"
    lr: float = 1e-4
    lambda_init: float = 0.0
    optimizer: str = "adam"
    lambda_max: float | None = None


CONTROLLERS = ("dual",)  # pid and adaptive (aPID) join with issue 3


def make_controller(cfg: ControllerConfig, cost_limit: float) -> LagrangeController:
    """Build the controller named by ``cfg.name``."""
    if cfg.name == "dual":
        return DualAscent(cost_limit, cfg.lr, cfg.lambda_init, cfg.optimizer, cfg.lambda_max)
    raise ValueError(f"unknown controller {cfg.name!r}; valid: {', '.join(CONTROLLERS)}")
