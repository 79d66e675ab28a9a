"""Lagrange controllers (METHOD.md section 5): dual ascent's direction, projection, exact SGD
numerics and state; PID and aPID against hand-computed sequences; aPID's gain dynamics."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from marvel.lagrange import (
    AdaptivePID,
    ControllerConfig,
    DualAscent,
    PIDLagrangian,
    make_controller,
)
from marvel.sac_lag import SACLagConfig


def test_sgd_step_is_lr_times_error() -> None:
    controller = DualAscent(cost_limit=20.0, lr=0.01, optimizer="sgd")
    assert controller.update(30.0) == pytest.approx(0.1)  # lambda += lr * (J_c - d)
    assert controller.update(25.0) == pytest.approx(0.15)
    assert controller.terms() == {"lagrange/lambda": pytest.approx(0.15), "lagrange/error": 5.0}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_step_equals_the_autograd_step_of_the_dual_loss(optimizer: str) -> None:
    """The controller sets the gradient -e of -lambda e directly; the result is bit-identical
    to backpropagating that loss through the same torch optimizer."""
    controller = DualAscent(cost_limit=20.0, lr=0.05, optimizer=optimizer)
    lam = torch.nn.Parameter(torch.tensor(0.0))
    optimizers = {"adam": partial(torch.optim.Adam, fused=True), "sgd": torch.optim.SGD}
    reference = optimizers[optimizer]([lam], lr=0.05)
    for cost in (40.0, 31.7, 12.3, 25.0, 0.0, 90.1, 19.99):
        reference.zero_grad(set_to_none=True)
        (-lam * (cost - 20.0)).backward()
        reference.step()
        with torch.no_grad():
            lam.clamp_(min=0.0)
        assert controller.update(cost) == lam.item()


def test_lambda_rises_above_limit_and_is_projected_at_zero() -> None:
    controller = DualAscent(cost_limit=20.0, lr=0.1)
    for _ in range(10):
        controller.update(50.0)
    high = controller.lam
    assert high > 0.5
    for _ in range(100):
        controller.update(0.0)
    assert controller.lam == 0.0  # never negative
    assert high > controller.lam


def test_upper_bound() -> None:
    controller = DualAscent(cost_limit=0.0, lr=1.0, optimizer="sgd", lambda_max=2.0)
    controller.update(100.0)
    assert controller.lam == 2.0


def test_state_round_trip_continues_identically() -> None:
    a = DualAscent(cost_limit=20.0, lr=0.05, lambda_init=0.3)
    for cost in (40.0, 10.0, 35.0):
        a.update(cost)
    b = DualAscent(cost_limit=20.0, lr=0.05)
    b.load_state_dict(a.state_dict())
    for cost in (50.0, 5.0):
        assert a.update(cost) == b.update(cost)


def test_factory_and_unknown_names() -> None:
    controller = make_controller(ControllerConfig(name="dual", lr=0.1, lambda_init=0.65), 20.0)
    assert controller.lam == pytest.approx(0.65)
    with pytest.raises(ValueError, match="valid: dual"):
        make_controller(ControllerConfig(name="lqr"), 20.0)
    with pytest.raises(ValueError, match="LambdaOptimizer 'rmsprop'; valid: adam, sgd"):
        DualAscent(20.0, 0.1, optimizer="rmsprop")


# PID and aPID (METHOD.md section 5) against hand-computed sequences.
PID_GAINS = dict(kp=0.1, ki=0.01, kd=0.5, d_delay=2, ema_p=0.5, ema_d=0.5)


def test_pid_hand_computed_sequence() -> None:
    pid = PIDLagrangian(cost_limit=10.0, **PID_GAINS)
    # J=20: e=10, I=0.1, p=5, q=10, D=10-0=10, lambda=0.1*5+0.1+0.5*10
    assert pid.update(20.0) == pytest.approx(5.6)
    # J=30: e=20, I=0.3, p=12.5, q=20, D=20-0 (window [0, 10]), lambda=1.25+0.3+10
    assert pid.update(30.0) == pytest.approx(11.55)
    # J=5: e=-5, I=0.25, p=3.75, q=12.5, D=12.5-10 (window [10, 20]), lambda=0.375+0.25+1.25
    assert pid.update(5.0) == pytest.approx(1.875)
    terms = pid.terms()
    assert terms["lagrange/p"] == pytest.approx(3.75) and terms["lagrange/i"] == pytest.approx(0.25)
    assert terms["lagrange/d"] == pytest.approx(2.5) and terms["lagrange/kp"] == 0.1


def test_pid_lambda_is_never_negative_and_integral_starts_at_lambda_init() -> None:
    pid = PIDLagrangian(cost_limit=10.0, lambda_init=0.65, **PID_GAINS)
    assert pid.lam == 0.65 and pid.terms()["lagrange/i"] == 0.65
    for _ in range(50):
        assert pid.update(0.0) >= 0.0
    assert pid.lam == 0.0 and pid.integral == 0.0


def test_apid_hand_computed_gains_high_and_low_cost() -> None:
    apid = AdaptivePID(cost_limit=10.0, **PID_GAINS)
    apid.update(20.0)  # window [0, 10]: m = 5.1, s = 5 (below the limit: gains shrink)
    factor = 1 + 0.05 * (5.1 - 10) / 5.1
    assert apid.kp == pytest.approx(0.1 * factor) and apid.ki == pytest.approx(0.01 * factor)
    assert apid.kd == pytest.approx(0.5 * (1 + 0.05 * 5 / 5.1))
    kp, ki, kd = apid.kp, apid.ki, apid.kd
    apid.update(60.0)  # q = 0.5*10 + 0.5*60 = 35; window [10, 35]: m = 22.6, s = 12.5 (above)
    factor = 1 + 0.05 * (22.6 - 10) / 22.6
    assert apid.kp == pytest.approx(kp * factor) and apid.ki == pytest.approx(ki * factor)
    assert apid.kd == pytest.approx(kd * (1 + 0.05 * 12.5 / 22.6))


def test_apid_gains_are_clipped_to_a_tenth_and_ten_times() -> None:
    low = AdaptivePID(cost_limit=20.0, **PID_GAINS)
    for _ in range(200):
        low.update(0.0)  # far below the limit: K_p, K_i shrink to K0 / 10
    assert low.kp == pytest.approx(0.01) and low.ki == pytest.approx(0.001)
    high = AdaptivePID(cost_limit=1.0, **PID_GAINS)
    for i in range(200):
        high.update(300.0 * (i % 2))  # far above the limit and volatile: every gain to 10 K0
    assert (high.kp, high.ki, high.kd) == pytest.approx((1.0, 0.1, 5.0))


def test_apid_kp_tanh() -> None:
    apid = AdaptivePID(cost_limit=10.0, kp_tanh=True, **PID_GAINS)
    apid.update(20.0)
    relative = (5.1 - 10) / 5.1
    assert apid.kp == pytest.approx(0.1 * (1 + 0.05 * math.tanh(relative)))
    assert apid.ki == pytest.approx(0.01 * (1 + 0.05 * relative))  # tanh on K_p only


@pytest.mark.parametrize("cls", [PIDLagrangian, AdaptivePID])
def test_monotone_response_to_violation(cls) -> None:
    def after_30_steps(cost: float) -> tuple[float, float]:
        controller = cls(cost_limit=20.0, **PID_GAINS)
        integrals = []
        for _ in range(30):
            controller.update(cost)
            integrals.append(controller.integral)
        assert integrals == sorted(integrals)  # the integral only grows above the limit
        return controller.lam, controller.integral

    lambdas, integrals = zip(*(after_30_steps(c) for c in (25.0, 30.0, 50.0, 80.0)), strict=True)
    assert list(lambdas) == sorted(lambdas) and len(set(lambdas)) == 4 and lambdas[0] > 0
    assert list(integrals) == sorted(integrals)


@pytest.mark.parametrize("cls", [PIDLagrangian, AdaptivePID])
def test_pid_state_round_trip(cls) -> None:
    a = cls(cost_limit=20.0, **PID_GAINS)
    for cost in (40.0, 10.0, 35.0, 22.0):
        a.update(cost)
    b = cls(cost_limit=20.0, **PID_GAINS)
    b.load_state_dict(a.state_dict())
    for cost in (50.0, 5.0, 30.0):
        assert a.update(cost) == b.update(cost)
    assert a.terms() == b.terms()


def test_factory_builds_every_controller() -> None:
    for name, cls in (("dual", DualAscent), ("pid", PIDLagrangian), ("adaptive", AdaptivePID)):
        assert type(make_controller(ControllerConfig(name=name), 20.0)) is cls


# The three behaviours METHOD.md section 5 states for aPID with the released code's defaults
# (K0 = 5e-6, d = 20, k = 10, a = b = g = 0.05), counted in controller steps; at the default
# cadence (lambda per minibatch) an iteration is U x batch / minibatch = 5 x 256 / 64 = 20 steps.
_SCHEDULE = SACLagConfig()
STEPS_PER_ITERATION = _SCHEDULE.updates_per_iteration * (
    _SCHEDULE.batch_size // _SCHEDULE.minibatch_size
)
K0, FLOOR, CEILING = 5e-6, 5e-6 / 10, 5e-6 * 10  # as AdaptivePID computes its clip bounds


def released_apid(**options: Any) -> AdaptivePID:
    controller = make_controller(ControllerConfig(name="adaptive", **options), cost_limit=20.0)
    assert isinstance(controller, AdaptivePID) and controller.initial_gains == (K0,) * 3
    return controller


def window_m(apid: AdaptivePID) -> float:
    """m = mean(W) + 0.1, the window statistic of AdaptivePID.adapt."""
    return float(np.mean(apid.cost_window)) + 0.1


def run_iterations(apid: AdaptivePID, cost: float, iterations: int) -> float:
    """Feed J_c for whole iterations at the default cadence; returns K_d / K0."""
    for _ in range(iterations * STEPS_PER_ITERATION):
        apid.update(cost)
    return apid.kd / K0


def test_apid_kd_only_ratchets_up() -> None:
    """K_d's factor 1 + g s/m is at least 1: a constant cost leaves it at 1.5 K0 once the window
    is full, a drop to 0 lifts it, and costs that rise and fall each iteration push it to 10 K0."""
    assert STEPS_PER_ITERATION == 20 and _SCHEDULE.lambda_update_every == "minibatch"
    apid = released_apid()
    assert run_iterations(apid, 25.0, 1) == pytest.approx(1.4905, abs=5e-5)
    assert run_iterations(apid, 25.0, 4) == pytest.approx(1.5367, abs=5e-5)  # iteration 5
    assert run_iterations(apid, 25.0, 15) == pytest.approx(1.5367, abs=5e-5)  # iteration 20
    assert run_iterations(apid, 0.0, 20) == pytest.approx(3.3860, abs=5e-5)

    swinging = released_apid()  # J_c = 25, 0, 25, 0, ... one value per iteration
    kd = [swinging.kd]
    for step in range(100 * STEPS_PER_ITERATION):
        swinging.update(25.0 if step // STEPS_PER_ITERATION % 2 == 0 else 0.0)
        kd.append(swinging.kd)
    assert kd == sorted(kd)  # never shrinks, whichever way the cost moves
    assert kd.index(CEILING) == 167  # 10 K0 at step 167, in iteration 9


def test_apid_gains_take_29_steps_to_their_floor_after_a_drop_from_25_to_0() -> None:
    """From where 20 iterations at J_c = 25 leave them (4.2975 K0), K_p and K_i compound down
    to K0 / 10 over 29 steps of J_c = 0: 6 factors over 1 while m > d, then positive factors
    falling from 0.9983 to 0.5691. None is negative: that needs m < d a / (1 + a) = 20/21."""
    apid = released_apid()
    for _ in range(20 * STEPS_PER_ITERATION):
        apid.update(25.0)
    assert apid.ki / K0 == pytest.approx(4.2975, abs=5e-5) and apid.kp == apid.ki
    factors = []
    while apid.ki > FLOOR and len(factors) < 100:
        ki = apid.ki
        apid.update(0.0)
        m = window_m(apid)
        factors.append(1 + 0.05 * (m - 20.0) / m)
        if apid.ki > FLOOR:
            assert apid.ki == pytest.approx(ki * factors[-1], rel=1e-12)  # the factor applied
    assert len(factors) == 29 and apid.kp == apid.ki == FLOOR
    assert [round(f, 4) for f in (factors[0], factors[5], factors[6], factors[-1])] == [
        1.0098,
        1.0016,
        0.9983,
        0.5691,
    ]
    assert all(f > 1 for f in factors[:6]) and factors[6:] == sorted(factors[6:], reverse=True)


def test_apid_gain_factor_turns_negative_below_m_of_20_over_21() -> None:
    """Without the floor (gain_clip = inf clips to [0, inf]) the sign shows: after 20 iterations
    at J_c = 25 and a drop to 0, the factor first goes negative at step 37, where m < 20/21."""
    apid = released_apid(gain_clip=math.inf)
    for _ in range(20 * STEPS_PER_ITERATION):
        apid.update(25.0)
    for _ in range(36):
        apid.update(0.0)
    assert apid.ki > 0.0 and window_m(apid) > 20 / 21
    apid.update(0.0)
    assert apid.kp == apid.ki == 0.0 and window_m(apid) < 20 / 21


def fresh_apid_gains(cost: float, steps: int) -> list[float]:
    """K_i after each of the first ``steps`` steps of a fresh controller at a constant J_c."""
    apid = released_apid()
    gains = []
    for _ in range(steps):
        apid.update(cost)
        gains.append(apid.ki)
        assert apid.kp == apid.ki
    return gains


@pytest.mark.parametrize(
    ("cost", "first_floor_step"),
    [(0.0, 1), (19.0, 1), (21.0, 3), (25.0, 7), (27.0, 12), (28.0, None)],
)
def test_apid_fresh_run_starts_on_the_floor(cost: float, first_floor_step: int | None) -> None:
    """The window starts as [0], so m starts far below d: a fresh controller at any constant J_c
    below 27.3 has K_p and K_i at K0 / 10 within its first iteration."""
    gains = fresh_apid_gains(cost, STEPS_PER_ITERATION)
    assert next((step for step, ki in enumerate(gains, 1) if ki == FLOOR), None) == first_floor_step


def test_apid_fresh_run_at_25_floor_and_way_back() -> None:
    """At J_c = 25: 0.10137 K0 after 6 steps, K0 / 10 from step 7 to 20 (the first iteration),
    back at K0 at step 256 (iteration 13). At 28 the floor is missed: the lowest is 0.1102 K0."""
    gains = fresh_apid_gains(25.0, 20 * STEPS_PER_ITERATION)
    assert gains[5] / K0 == pytest.approx(0.10137, abs=5e-6)
    assert [step for step, ki in enumerate(gains, 1) if ki == FLOOR] == list(range(7, 21))
    assert next(step for step, ki in enumerate(gains, 1) if ki >= K0) == 256
    assert min(fresh_apid_gains(28.0, STEPS_PER_ITERATION)) / K0 == pytest.approx(0.1102, abs=5e-5)
