"""Helpers the tests share (the fixtures are in conftest.py): the CLI runner and a command
killed mid-way, config composition, reading a run dir, and the offline algorithms' reference
computations."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch

    from marvel.data.buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *overrides: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python run.py <overrides>`` in a subprocess, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_when(
    command: tuple[str, ...],
    run_dir: Path,
    ready,
    output: Path,
    timeout: float = 300,
    sig: signal.Signals = signal.SIGKILL,
) -> None:
    """Run ``python run.py <command>`` and send it ``sig`` as soon as ``ready(output text)``
    holds."""
    with output.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *command, f"hydra.run.dir={run_dir}"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            # a shell's background job ignores SIGINT, and a child inherits that: restore it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready(output.read_text()):
                proc.send_signal(sig)
                break
            time.sleep(0.02)
        proc.wait()
    expected = 130 if sig == signal.SIGINT else -sig  # Ctrl-C: run.py exits 130
    assert proc.returncode == expected, f"not ended by {sig.name}:\n{output.read_text()}"


def locked_version_mismatches() -> dict[str, str]:
    """The packages of constraints.txt whose installed version is another (or none):
    ``{name: "locked X, installed Y"}``; a local label (``+cpu``) is not a difference."""
    import importlib.metadata

    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, locked = line.partition("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != locked:
            found[name] = f"locked {locked}, installed {installed}"
    return found


def compose_config(*overrides: str, with_hydra: bool = False) -> Any:
    """The job config ``python run.py <overrides>`` composes (Hydra's compose API), with its
    ``hydra`` node (the sweeper's and the launcher's settings) when ``with_hydra``."""
    from hydra import compose, initialize_config_dir

    from marvel.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)


def compose_with_hydra(*overrides: str) -> Any:
    return compose_config(*overrides, with_hydra=True)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """A sweep's job dirs (``<job number>_<env>_<experiment>_s<seed>``) by job number."""
    jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.split("_")[0].isdigit()]
    return sorted(jobs, key=lambda d: int(d.name.split("_")[0]))


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_transfers_to_sac_lag(pretrained, obs, act) -> None:
    """A ``Pretrained`` survives a weights_only checkpoint round trip and becomes a SAC-Lag
    start through ``SACLag.load_pretrained`` (strict loads, the finetuning actor lr reset)."""
    import io

    import torch

    from marvel.sac_lag import SACLag, SACLagConfig
    from marvel.start import Pretrained

    obs_dim, act_dim = obs.shape[1], act.shape[1]
    stream = io.BytesIO()  # through a checkpoint file's bytes, as the pipeline stores it
    torch.save(pretrained.state_dict(), stream)
    stream.seek(0)
    state = torch.load(stream, weights_only=True)
    restored = Pretrained.from_state_dict(state, obs_dim, act_dim, torch.device("cpu"))
    assert restored.algo == pretrained.algo and restored.config == pretrained.config
    assert restored.metrics == pretrained.metrics
    assert restored.lagrange_multiplier == pretrained.lagrange_multiplier

    cfg = SACLagConfig(actor_lr=1.234e-5)
    agent = SACLag(obs_dim, act_dim, cfg, pretrained.sizes, torch.device("cpu"))
    agent.load_pretrained(restored)
    assert all(g["lr"] == 1.234e-5 for g in agent.actor_optimizer.param_groups)
    with torch.no_grad():
        assert torch.equal(agent.actor.act(obs, True), pretrained.actor.act(obs, True))
        for name in ("reward_critic", "cost_critic"):
            ours, theirs = getattr(agent, name), getattr(pretrained, name)
            assert torch.equal(ours(obs, act), theirs(obs, act))
            assert torch.equal(getattr(agent, f"{name}_target")(obs, act), theirs(obs, act))


def expected_vae_loss(
    vae: Any, obs: torch.Tensor, act: torch.Tensor, kl_weight: float
) -> torch.Tensor:
    """BEAR-L's and BCQ-L's VAE loss from its equation (one forward of ``vae``: one z draw):
    L_vae = mean ||a_hat - a||^2 + beta mean KL(N(mu, sigma^2) || N(0, I))."""
    import torch

    recon, mean, std = vae(obs, act)
    kl = 0.5 * (mean**2 + std**2 - 1 - torch.log(std**2))
    return ((recon - act) ** 2).mean() + kl_weight * kl.mean()


def expected_critic_losses(
    learner: Any, batch: dict[str, torch.Tensor], next_act: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BEAR-L's and BCQ-L's L_Qr and L_Qc from their equations, one next action at a time:
    the soft-clipped double-Q targets over the n next actions ``next_act`` (B, n, act_dim) of a
    learner's (2-head) Qbar_r and Qbar_c, y = scale * r + gamma (1 - d) max_k [...]."""
    import math

    import torch

    cfg, obs, next_obs = learner.cfg, batch["obs"], batch["next_obs"]
    n_b, n_t = next_act.shape[:2]
    best_r = torch.full((n_b,), -math.inf)
    best_c = torch.full((n_b,), -math.inf)
    for k in range(n_t):
        q = learner.reward_critic_target(next_obs, next_act[:, k])
        mix = cfg.target_mix * torch.minimum(q[0], q[1]) + (1 - cfg.target_mix) * torch.maximum(
            q[0], q[1]
        )
        best_r = torch.maximum(best_r, mix)
        best_c = torch.maximum(best_c, learner.cost_critic_target(next_obs, next_act[:, k])[0])
    not_done = 1 - batch["done"]
    y_r = cfg.reward_scale * batch["reward"] + cfg.gamma * not_done * best_r
    y_c = cfg.cost_scale * batch["cost"] + cfg.gamma * not_done * best_c
    q_r = learner.reward_critic(obs, batch["act"])
    loss_q_r = ((q_r[0] - y_r) ** 2).mean() + ((q_r[1] - y_r) ** 2).mean()
    loss_q_c = ((learner.cost_critic(obs, batch["act"])[0] - y_c) ** 2).mean()
    return loss_q_r, loss_q_c


def assert_qc_pid_multiplier(
    make_learner: Callable[[float], Any], buffer: ReplayBuffer, batch_size: int
) -> None:
    """A learner with OSRL's PID lambda on Q_c (BEAR-L, BCQ-L; ``make_learner(cost_limit)``):
    d = 0: every cost violates, so lambda grows; d = 100 (l = 43, above any Q_c here): the
    integral never leaves 0. Also replays OSRL's PID recursion on the logged Q_c (in float32,
    as the learner computes it).
    """
    import torch

    lams: dict[float, list[float]] = {}
    for cost_limit in (0.0, 100.0):
        torch.manual_seed(0)
        learner = make_learner(cost_limit)
        cfg = learner.cfg
        outs = [learner.update(buffer.sample(batch_size)) for _ in range(150)]
        lams[cost_limit] = [float(o["offline/lambda"]) for o in outs]
        prev, integral = torch.zeros(()), torch.zeros(())
        for o in outs:
            e = o["offline/q_c"] - learner.q_threshold  # e_t = mean Q_c(s, a~) - l
            integral = (integral + e).clamp(min=0)  # I_t = max(0, I_{t-1} + e_t)
            lam = (
                cfg.pid_kp * e.clamp(min=0)
                + cfg.pid_ki * integral
                + cfg.pid_kd * (e - prev).clamp(min=0)
            ).clamp(min=0)
            prev = e
            assert float(o["offline/lambda"]) == pytest.approx(float(lam), rel=1e-5, abs=1e-12)
        assert learner.to_pretrained().lagrange_multiplier == lams[cost_limit][-1]
        if cost_limit > 0:
            assert float(learner.pid.integral) == 0.0
    violating, satisfied = lams[0.0], lams[100.0]
    assert violating[-1] > 0.0
    assert sum(violating[-50:]) > sum(violating[:50])  # it rises
    assert violating[-1] > 10 * max(satisfied)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block, the previous count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def dims(buffer: ReplayBuffer) -> tuple[int, int]:
    """(obs_dim, act_dim) of a buffer's transitions."""
    return buffer.storage["obs"].shape[1], buffer.storage["act"].shape[1]


def random_batch(
    n: int = 16, obs_dim: int = 5, act_dim: int = 2, act_bound: float = 1.0
) -> dict[str, torch.Tensor]:
    """The same n random transitions every call (seed 0), actions uniform in
    [-act_bound, act_bound)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(n, obs_dim, generator=g),
        "act": torch.rand(n, act_dim, generator=g) * (2 * act_bound) - act_bound,
        "reward": torch.randn(n, generator=g),
        "cost": (torch.rand(n, generator=g) < 0.3).float(),
        "next_obs": torch.randn(n, obs_dim, generator=g),
        "done": (torch.rand(n, generator=g) < 0.2).float(),
    }


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A refused command: non-zero exit, no traceback, and every fragment in its output."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output
