"""Dual ascent (METHOD.md section 5): direction, projection, exact SGD numerics, state."""

from __future__ import annotations

import pytest

from marvel.lagrange import ControllerConfig, DualAscent, make_controller


def test_sgd_step_is_lr_times_error() -> None:
    controller = DualAscent(cost_limit=20.0, lr=0.01, optimizer="sgd")
    assert controller.update(30.0) == pytest.approx(0.1)  # lambda += lr * (J_c - d)
    assert controller.update(25.0) == pytest.approx(0.15)
    assert controller.terms() == {"lagrange/lambda": pytest.approx(0.15), "lagrange/error": 5.0}


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
    with pytest.raises(ValueError, match="optimizer"):
        DualAscent(20.0, 0.1, optimizer="rmsprop")
