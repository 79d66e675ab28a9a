"""Lagrange-multiplier controllers behind one small interface (METHOD.md section 5).

A controller owns lambda. The agent reads ``controller.lam``; the training loop feeds it the mean
episode cost J_c of the latest rollout through ``update``. Controllers are separate from the
agents (OmniSafe's design) and, unlike OmniSafe's, carry their full state for checkpoints.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from marvel.choices import Choice


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


class LambdaOptimizer(Choice):
    """Dual ascent's optimizer on lambda (``pid.optimizer``)."""

    adam = "adam"
    sgd = "sgd"


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
        optimizer: LambdaOptimizer | str = LambdaOptimizer.adam,
        lambda_max: float | None = None,
    ) -> None:
        super().__init__(cost_limit)
        self.lambda_max = lambda_max
        self._lam = torch.nn.Parameter(torch.tensor(float(lambda_init)))
        # Adam's fused kernel: its square root is exact, on every CPU alike (the per-tensor
        # Adam's goes through MKL, which rounds it otherwise on other CPUs)
        optimizers = {
            LambdaOptimizer.adam: partial(torch.optim.Adam, fused=True),
            LambdaOptimizer.sgd: torch.optim.SGD,
        }
        self._optimizer = optimizers[LambdaOptimizer(optimizer)]([self._lam], lr=lr)
        self._last_error = 0.0

    @property
    def lam(self) -> float:
        return float(self._lam.detach())

    def update(self, episode_cost: float) -> float:
        error = float(episode_cost) - self.cost_limit  # e = J_c - d
        # The loss -lambda e has the gradient -e: set it, no autograd pass for one scalar
        # (the same float32 value the backward pass gives, at half the cost of a step).
        self._lam.grad = torch.tensor(-error)
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


class PIDLagrangian(LagrangeController):
    """PID Lagrangian (Stooke et al. 2020, in OmniSafe's form; METHOD.md section 5, ``pid=pid``).

    With e = J_c - d:
        I <- max(0, I + K_i e)                      integral, starting at lambda_0
        p <- a_p p + (1 - a_p) e                    smoothed error
        q <- a_d q + (1 - a_d) J_c                  smoothed cost
        D = max(0, q - q_{t-k})                     derivative over a delay of k steps
        lambda = max(0, K_p p + I + K_d D)          (clipped to lambda_max if given)
    The delay window holds the last k smoothed costs; it starts as [0] (OmniSafe).
    """

    def __init__(
        self,
        cost_limit: float,
        kp: float,
        ki: float,
        kd: float,
        d_delay: int = 10,
        ema_p: float = 0.9,
        ema_d: float = 0.9,
        lambda_init: float = 0.0,
        lambda_max: float | None = None,
    ) -> None:
        super().__init__(cost_limit)
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.ema_p, self.ema_d, self.lambda_max = ema_p, ema_d, lambda_max
        self.integral = float(lambda_init)
        self.smoothed_error = 0.0
        self.smoothed_cost = 0.0
        self.derivative = 0.0
        self.cost_window: deque[float] = deque([0.0], maxlen=d_delay)
        self._lam = max(0.0, float(lambda_init))
        self._last_error = 0.0

    @property
    def lam(self) -> float:
        return self._lam

    def update(self, episode_cost: float) -> float:
        cost = float(episode_cost)
        error = cost - self.cost_limit
        self.integral = max(0.0, self.integral + self.ki * error)
        self.smoothed_error = self.ema_p * self.smoothed_error + (1 - self.ema_p) * error
        self.smoothed_cost = self.ema_d * self.smoothed_cost + (1 - self.ema_d) * cost
        self.derivative = max(0.0, self.smoothed_cost - self.cost_window[0])
        lam = self.kp * self.smoothed_error + self.integral + self.kd * self.derivative
        self._lam = min(max(0.0, lam), math.inf if self.lambda_max is None else self.lambda_max)
        self.cost_window.append(self.smoothed_cost)
        self._last_error = error
        self.adapt()
        return self._lam

    def adapt(self) -> None:
        """Gain adaptation after each step: none for fixed-gain PID (see AdaptivePID)."""

    def terms(self) -> dict[str, float]:
        return {
            "lagrange/lambda": self._lam,
            "lagrange/error": self._last_error,
            "lagrange/p": self.smoothed_error,
            "lagrange/i": self.integral,
            "lagrange/d": self.derivative,
            "lagrange/kp": self.kp,
            "lagrange/ki": self.ki,
            "lagrange/kd": self.kd,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "gains": [self.kp, self.ki, self.kd],
            "integral": self.integral,
            "smoothed_error": self.smoothed_error,
            "smoothed_cost": self.smoothed_cost,
            "derivative": self.derivative,
            "cost_window": list(self.cost_window),
            "lambda": self._lam,
            "last_error": self._last_error,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kp, self.ki, self.kd = (float(g) for g in state["gains"])
        self.integral = float(state["integral"])
        self.smoothed_error = float(state["smoothed_error"])
        self.smoothed_cost = float(state["smoothed_cost"])
        self.derivative = float(state["derivative"])
        self.cost_window = deque(state["cost_window"], maxlen=self.cost_window.maxlen)
        self._lam = float(state["lambda"])
        self._last_error = float(state["last_error"])


class AdaptivePID(PIDLagrangian):
    """Marvel's adaptive PID (aPID; METHOD.md section 5, ``pid=adaptive``).

    After each PID step, with W the window of the last k smoothed costs (after this step's
    append), m = mean(W) + 0.1 and s = std(W) (population):
        K_p <- K_p (1 + a (m - d)/m)     [kp_tanh: K_p (1 + a tanh((m - d)/m))]
        K_i <- K_i (1 + b (m - d)/m)
        K_d <- K_d (1 + g s/m)
    then every gain is clipped to [K0 / gain_clip, gain_clip K0] of its initial value K0.
    METHOD.md writes the K_p and K_i rules as two branches (m > d: 1 + a (m - d)/m; else
    1 - a (d - m)/m); they are one expression. K_p and K_i grow while the window's mean m is
    above the limit and shrink below it, so they follow the cost with the window's lag; K_d
    never shrinks (its factor is at least 1) and grows with the cost's volatility.
    """

    def __init__(
        self,
        cost_limit: float,
        *,
        adapt_kp: float = 0.05,
        adapt_ki: float = 0.05,
        adapt_kd: float = 0.05,
        kp_tanh: bool = False,
        gain_clip: float = 10.0,
        **pid_options: Any,
    ) -> None:
        """``pid_options``: the gains, delay, smoothing and bounds of PIDLagrangian."""
        super().__init__(cost_limit, **pid_options)
        self.initial_gains = (self.kp, self.ki, self.kd)
        self.adapt_kp, self.adapt_ki, self.adapt_kd = adapt_kp, adapt_ki, adapt_kd
        self.kp_tanh, self.gain_clip = kp_tanh, gain_clip

    def adapt(self) -> None:
        window = np.asarray(self.cost_window, dtype=np.float64)
        m, s = float(window.mean()) + 0.1, float(window.std())
        relative_error = (m - self.cost_limit) / m
        kp_step = math.tanh(relative_error) if self.kp_tanh else relative_error
        gains = (
            self.kp * (1 + self.adapt_kp * kp_step),
            self.ki * (1 + self.adapt_ki * relative_error),
            self.kd * (1 + self.adapt_kd * s / m),
        )
        self.kp, self.ki, self.kd = (
            min(max(gain, k0 / self.gain_clip), k0 * self.gain_clip)
            for gain, k0 in zip(gains, self.initial_gains, strict=True)
        )


class Controller(Choice):
    """The multiplier's controller (``pid.name``): dual ascent, PID or Marvel's adaptive PID."""

    dual = "dual"
    pid = "pid"
    adaptive = "adaptive"


@dataclass
class ControllerConfig:
    """The ``pid`` config group (conf/pid/*.yaml); each controller reads its own fields."""

    name: Controller = Controller.dual
    # lambda_0: a number; "offline" for the offline algorithm's multiplier; "figure2" for the
    # task's hand-found lambda_0 of the paper's Figure 2 (both resolved by the pipeline before
    # the controller is built). The offline multiplier is never carried over unless asked
    # (METHOD.md section 2: its scale differs from the one online learning needs).
    lambda_init: Any = 0.0
    lambda_max: float | None = None
    # dual ascent
    lr: float = 1e-4
    optimizer: LambdaOptimizer = LambdaOptimizer.adam
    # PID (the released code's defaults)
    kp: float = 5e-6
    ki: float = 5e-6
    kd: float = 5e-6
    d_delay: int = 10
    ema_p: float = 0.9
    ema_d: float = 0.9
    # aPID gain adaptation (the released code's a = b = g = 0.05, clip to [K0/10, 10 K0])
    adapt_kp: float = 0.05
    adapt_ki: float = 0.05
    adapt_kd: float = 0.05
    kp_tanh: bool = False  # the paper's tanh on the K_p adaptation
    gain_clip: float = 10.0

    def __post_init__(self) -> None:  # the Python API's strings (a wrong one raises)
        self.name, self.optimizer = Controller(self.name), LambdaOptimizer(self.optimizer)


def make_controller(cfg: ControllerConfig, cost_limit: float) -> LagrangeController:
    """Build the controller named by ``cfg.name``."""
    pid_args = dict(
        kp=cfg.kp,
        ki=cfg.ki,
        kd=cfg.kd,
        d_delay=cfg.d_delay,
        ema_p=cfg.ema_p,
        ema_d=cfg.ema_d,
        lambda_init=cfg.lambda_init,
        lambda_max=cfg.lambda_max,
    )
    if cfg.name == Controller.dual:
        return DualAscent(cost_limit, cfg.lr, cfg.lambda_init, cfg.optimizer, cfg.lambda_max)
    if cfg.name == Controller.pid:
        return PIDLagrangian(cost_limit, **pid_args)
    return AdaptivePID(
        cost_limit,
        **pid_args,
        adapt_kp=cfg.adapt_kp,
        adapt_ki=cfg.adapt_ki,
        adapt_kd=cfg.adapt_kd,
        kp_tanh=cfg.kp_tanh,
        gain_clip=cfg.gain_clip,
    )
