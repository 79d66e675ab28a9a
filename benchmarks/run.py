"""marvel's benchmark suite: rollout, evaluation, SAC-Lag updates, collection, the main command.

    python benchmarks/run.py [--json OUT] [--quick] [--env BallCircle] [--numerics MODE]

Every figure is measured under both CPU numerics (marvel/numerics.py), each in a process of its
own, one after the other, and printed side by side: ``portable`` (the default: one torch thread,
code paths every x86-64 CPU with AVX2 runs alike) and ``native`` (the CPU's fastest code, torch's
default thread count); ``--numerics portable`` or ``native`` measures one mode alone.

Each figure is set against a reference measured in the same process: marvel's rollout and
evaluation against a bare ``obs -> torch -> actor.act -> numpy -> env.step`` loop on the same env
and actor; marvel's SAC-Lag update against a minimal hand-written torch loop of the same math and
against the machine's own fp32 GEMM rate. Marvel and its reference alternate, round by round;
throughputs are the best round (other load only ever slows a run down), ratios the median of the
per-round ratios.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from marvel import nets, numerics
from marvel.config import CollectConfig
from marvel.data.buffer import ReplayBuffer
from marvel.envs import TASKS, TaskSpec, make_env, space_dims, task_spec
from marvel.errors import MarvelError
from marvel.evaluate import EVAL_SEED_OFFSET, evaluate, make_eval_envs
from marvel.lagrange import DualAscent
from marvel.launch import available_cpus
from marvel.nets import SquashedGaussianActor
from marvel.offline.bcql import BCQL, BCQLConfig
from marvel.offline.bearl import BEARL, BEARLConfig
from marvel.offline.cpq import CPQ, CPQConfig
from marvel.rollout import episode_seed, run_episode
from marvel.sac_lag import OnlineLearner, SACLag, SACLagConfig
from marvel.stages.collect import collect_dataset
from marvel.start import NetworkSizes

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "records"
SEED = 0
BUFFER_SIZE = 100_000  # transitions in the replay buffer the updates sample from
EPISODE_COST = 25.0  # J_c fed to the Lagrange controller during the update benchmark
LAMBDA_LR = 1e-4  # the Lagrange multiplier's step size (BallCircle's) in both update loops
GEMM_SHAPES = ((1024, 1024, 1024), (256, 256, 256), (64, 256, 256))  # (m, k, n)


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; --quick shrinks it."""

    episodes: int  # per timed rollout / evaluation round
    repeats: int  # timed rounds of each measurement (see ``compare``) but those below
    # Timed rounds of the update schedules and the GEMM shapes (as many, so that both best-ofs
    # draw alike). An update round is short (20 steps, ~0.2 s at B = 256): 8 of them span ~3 s,
    # which one episode of load from outside the VM can cover; 24 span ~10 s.
    update_repeats: int
    improves: int  # OnlineLearner.improve calls per timed update round (5 updates each)
    collect_episodes: int
    offline_steps: int  # per timed round of each offline algorithm
    main_command: bool


FULL = Sizes(
    episodes=10,
    repeats=8,
    update_repeats=24,
    improves=4,
    collect_episodes=60,
    offline_steps=20,
    main_command=True,
)
QUICK = Sizes(  # the suite's plumbing check: every section runs, its figures are not kept
    episodes=2,
    repeats=2,
    update_repeats=2,
    improves=1,
    collect_episodes=4,
    offline_steps=3,
    main_command=False,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes, no main command")
    parser.add_argument("--env", default="BallCircle", choices=TASKS, help="task to run")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="also run `python run.py env=<env> budget=paper` end to end (hours on a CPU)",
    )
    parser.add_argument(
        "--numerics",
        choices=(*numerics.MODES, "both"),
        default="both",
        help="measure in this numerics mode, or in both side by side (default)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="figures to compare with (default: benchmarks/records/reference_<full|quick>.json"
        ", the reference figures of benchmarks/README.md)",
    )
    return parser.parse_args()


# ----------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rates(
    works: dict[str, Callable[[], float]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Units/s of each ``work`` (which returns the units it did) in each of ``repeats`` rounds;
    the works alternate within a round, so that load from elsewhere hits them alike."""
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            sync(device)
            start = time.perf_counter()
            units = work()
            sync(device)
            rates[name].append(units / (time.perf_counter() - start))
    return rates


def compare(
    marvel: Callable[[], float],
    reference: Callable[[], float],
    repeats: int,
    device: torch.device,
) -> tuple[float, float, float]:
    """(marvel's best units/s, the reference's best, the median of per-round ratios).

    Best-of for throughputs: load from elsewhere only ever slows a round down. The ratio pairs
    the two windows of each round, which share the machine's state, so load that comes and goes
    cancels out of it instead of favouring whichever side happened to catch a quiet moment.
    """
    rates = timed_rates({"marvel": marvel, "reference": reference}, repeats, device)
    ratios = [m / r for m, r in zip(rates["marvel"], rates["reference"], strict=True)]
    return max(rates["marvel"]), max(rates["reference"]), float(np.median(ratios))


# ----------------------------------------------------------------------------- rollout, eval


class StepCounter(gym.Wrapper):
    """Counts ``env.step`` calls (``evaluate`` returns no step count); both loops pay for it."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action: np.ndarray) -> tuple:
        self.steps += 1
        return self.env.step(action)


def bare_episodes(
    env: gym.Env,
    actor: SquashedGaussianActor,
    device: torch.device,
    episodes: int,
    seed: int,
    deterministic: bool,
) -> None:
    """The reference loop: obs -> torch -> actor.act -> numpy -> env.step, nothing stored."""
    for i in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, i))
        done = False
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            action = actor.act(obs_t, deterministic)[0].cpu().numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated


def bench_episodes(
    marvel_episodes: Callable[[], None],
    env: StepCounter,
    actor: SquashedGaussianActor,
    device: torch.device,
    sizes: Sizes,
    seed: int,
    deterministic: bool,
) -> dict[str, float]:
    """env steps/s of ``marvel_episodes`` against the bare loop on the same reset seeds."""

    def marvel() -> float:
        start = env.steps
        marvel_episodes()
        return env.steps - start

    def bare() -> float:
        start = env.steps
        bare_episodes(env, actor, device, sizes.episodes, seed, deterministic)
        return env.steps - start

    marvel()  # warm-up
    bare()
    rate, bare_rate, ratio = compare(marvel, bare, sizes.repeats, device)
    return {
        "env_steps_per_s": rate,
        "bare_env_steps_per_s": bare_rate,
        "ratio_to_bare_env": ratio,
        "episodes": sizes.episodes,
    }


def bench_rollout(
    env: StepCounter, actor: SquashedGaussianActor, device: torch.device, sizes: Sizes
) -> dict[str, float]:
    """Stochastic episodes: marvel's ``run_episode`` against the bare loop."""

    def episodes() -> None:
        for i in range(sizes.episodes):
            run_episode(env, actor, device, seed=episode_seed(SEED, i))

    return bench_episodes(episodes, env, actor, device, sizes, SEED, deterministic=False)


def bench_eval(
    env: StepCounter,
    actor: SquashedGaussianActor,
    task: TaskSpec,
    device: torch.device,
    sizes: Sizes,
) -> dict[str, float]:
    """Deterministic episodes: marvel's ``evaluate`` against the bare loop, same reset seeds;
    in one in-process env (the default, ``eval_envs=1``), then in min(episodes, CPUs) worker
    processes (``eval_envs > 1``, when there are 2 CPUs or more)."""

    def episodes() -> None:
        evaluate(actor, env, task, sizes.episodes, SEED, device)

    seed = SEED + EVAL_SEED_OFFSET
    results = bench_episodes(episodes, env, actor, device, sizes, seed, deterministic=True)
    workers = min(sizes.episodes, available_cpus())
    if workers < 2:
        return results

    def bare() -> float:
        start = env.steps
        bare_episodes(env, actor, device, sizes.episodes, seed, deterministic=True)
        return env.steps - start

    steps = bare()  # the worker envs run exactly these episodes (tests/test_evaluate.py)
    parallel_envs = make_eval_envs(task.name, workers)

    def parallel() -> float:
        evaluate(actor, parallel_envs, task, sizes.episodes, SEED, device)
        return steps

    parallel()  # warm-up (the workers are up already)
    rate, _, ratio = compare(parallel, bare, sizes.repeats, device)
    parallel_envs.close()
    return {
        **results,
        "parallel_envs": workers,
        "parallel_env_steps_per_s": rate,
        "parallel_ratio_to_bare_env": ratio,
    }


# ----------------------------------------------------------------------------- update


def random_transitions(obs_dim: int, act_dim: int, size: int) -> dict[str, np.ndarray]:
    """Replay data for timing: values do not matter to dense matmuls, shapes do."""
    rng = np.random.default_rng(SEED)
    return {
        "obs": rng.standard_normal((size, obs_dim), dtype=np.float32),
        "act": rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        "reward": rng.standard_normal(size, dtype=np.float32),
        "cost": rng.integers(0, 2, size).astype(np.float32),
        "next_obs": rng.standard_normal((size, obs_dim), dtype=np.float32),
        "done": np.zeros(size, dtype=np.float32),
        "timeout": np.zeros(size, dtype=np.float32),
    }


def sequential_mlp(in_dim: int, hidden_sizes: list[int], out_dim: int) -> nn.Sequential:
    dims = [in_dim, *hidden_sizes]
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class MinimalSACLag:
    """The reference: SAC-Lag's minibatch step written plainly, with nn.Sequential MLPs.

    Same networks (actor with mu and log-std heads fused in one output layer, twin reward
    critics, a deeper cost critic, Polyak targets), same losses, same batch schedule. Alpha is
    fixed as in the paper's config, so there are three optimizers to step (marvel's fourth, for
    alpha, is idle then); lambda takes one projected dual-ascent step per update.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: SACLagConfig,
        networks: NetworkSizes,
        data: dict[str, torch.Tensor],
        device: torch.device,
    ) -> None:
        self.cfg, self.data = cfg, data
        self.lam = 0.0
        self.actor = sequential_mlp(obs_dim, networks.hidden_sizes, 2 * act_dim).to(device)
        self.q_r = nn.ModuleList(
            sequential_mlp(obs_dim + act_dim, networks.hidden_sizes, 1)
            for _ in range(networks.num_reward_critics)
        ).to(device)
        self.q_c = sequential_mlp(obs_dim + act_dim, networks.cost_hidden_sizes, 1).to(device)
        self.q_r_target = copy.deepcopy(self.q_r).requires_grad_(False)
        self.q_c_target = copy.deepcopy(self.q_c).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.q_r_opt = torch.optim.Adam(self.q_r.parameters(), lr=cfg.critic_reward_lr)
        self.q_c_opt = torch.optim.Adam(self.q_c.parameters(), lr=cfg.critic_cost_lr)

    def policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.actor(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(-20.0, 2.0)
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        log_prob = -0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_prob -= 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), log_prob.sum(-1)

    @staticmethod
    def q(critics: nn.ModuleList, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([critic(x).squeeze(-1) for critic in critics])

    def step(self, b: dict[str, torch.Tensor]) -> None:
        cfg, alpha = self.cfg, self.cfg.alpha
        not_done = 1.0 - b["done"]
        with torch.no_grad():
            next_act, next_log_prob = self.policy(b["next_obs"])
            next_q_r = self.q(self.q_r_target, b["next_obs"], next_act).min(0).values
            y_r = cfg.reward_scale * b["reward"] + cfg.gamma * not_done * (
                next_q_r - alpha * next_log_prob
            )
            next_q_c = self.q_c_target(torch.cat([b["next_obs"], next_act], -1)).squeeze(-1)
            y_c = b["cost"] + cfg.gamma * not_done * next_q_c

        loss_q_r = ((self.q(self.q_r, b["obs"], b["act"]) - y_r) ** 2).mean(1).sum()
        self.q_r_opt.zero_grad()
        loss_q_r.backward()
        self.q_r_opt.step()
        q_c = self.q_c(torch.cat([b["obs"], b["act"]], -1)).squeeze(-1)
        loss_q_c = ((q_c - y_c) ** 2).mean()
        self.q_c_opt.zero_grad()
        loss_q_c.backward()
        self.q_c_opt.step()

        act, log_prob = self.policy(b["obs"])
        q_r_pi = self.q(self.q_r, b["obs"], act).min(0).values
        q_c_pi = self.q_c(torch.cat([b["obs"], act], -1)).squeeze(-1)
        loss_actor = (-q_r_pi + self.lam * q_c_pi + alpha * log_prob).mean()
        self.actor_opt.zero_grad()
        loss_actor.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for net, target in ((self.q_r, self.q_r_target), (self.q_c, self.q_c_target)):
                torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), cfg.tau)

    def update(self, cost_limit: float) -> None:
        """One update: lambda step, a batch sampled with replacement, split into minibatches."""
        self.lam = max(0.0, self.lam + LAMBDA_LR * (EPISODE_COST - cost_limit))
        idx = torch.randint(
            len(self.data["obs"]), (self.cfg.batch_size,), device=self.data["obs"].device
        )
        batch = {k: v[idx] for k, v in self.data.items()}
        for start in range(0, self.cfg.batch_size, self.cfg.minibatch_size):
            self.step({k: v[start : start + self.cfg.minibatch_size] for k, v in batch.items()})


def update_matmul_flops(obs_dim: int, act_dim: int, networks: NetworkSizes, batch: int) -> float:
    """Matmul FLOPs one SAC-Lag minibatch step needs, counted analytically.

    A Linear(i, o) on B rows costs 2*B*i*o forward (one multiply-add per weight per row). Its
    backward costs 2*B*i*o more for the weight gradient when its weights are trained, and
    2*B*i*o more for the input gradient when something before it needs a gradient; so 3x its
    forward when trained (2x for a first layer, whose input needs no gradient) and 2x when it
    only passes a gradient through. Counted, with F(net) = its forward and F1 = its first layer:
      critic targets: actor on s', every target critic head on (s', a')       F
      critic losses:  Q_r heads and Q_c on (s, a), trained                     3F - F1
      actor loss:     actor on s, trained                                      3F - F1
                      Q_r heads and Q_c on (s, a~), gradient to a~ only        2F
    Bias adds, activations, the optimizers and Polyak averaging are not matmuls; not counted.
    """

    def layer_flops(dims: list[int], copies: int = 1) -> list[float]:
        return [2.0 * batch * i * o * copies for i, o in zip(dims[:-1], dims[1:], strict=True)]

    hidden = networks.hidden_sizes
    actor = layer_flops([obs_dim, *hidden]) + 2 * layer_flops([hidden[-1], act_dim])  # mu, log_std
    q_r = layer_flops([obs_dim + act_dim, *hidden, 1], networks.num_reward_critics)
    q_c = layer_flops([obs_dim + act_dim, *networks.cost_hidden_sizes, 1])
    forward = sum(actor) + sum(q_r) + sum(q_c)
    critic_losses = 3 * (sum(q_r) + sum(q_c)) - q_r[0] - q_c[0]
    actor_loss = 3 * sum(actor) - actor[0] + 2 * (sum(q_r) + sum(q_c))
    return forward + critic_losses + actor_loss


def gemm_flops(m: int, k: int, n: int, repeats: int, device: torch.device) -> float:
    """Best fp32 FLOP/s of the networks' product on (m, k) @ (k, n), ~0.2 GFLOP per timed
    repeat: torch.mm, or numpy's OpenBLAS where the networks use it (``nets.on_openblas``)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    calls = max(1, int(2e8 // (2 * m * k * n)))
    if nets.on_openblas(a):
        product = functools.partial(np.matmul, a.numpy(), b.numpy(), out=out.numpy())
    else:
        product = functools.partial(torch.mm, a, b, out=out)

    def work() -> float:
        for _ in range(calls):
            product()
        return 2.0 * m * k * n * calls

    work()  # warm-up
    return max(timed_rates({"mm": work}, repeats, device)["mm"])


def bench_update(
    task: TaskSpec,
    obs_dim: int,
    act_dim: int,
    cfg: SACLagConfig,
    networks: NetworkSizes,
    device: torch.device,
    sizes: Sizes,
) -> dict[str, float]:
    """Minibatch steps/s of marvel (through ``OnlineLearner.improve``) and the minimal loop."""
    data = random_transitions(obs_dim, act_dim, BUFFER_SIZE)
    buffer = ReplayBuffer(obs_dim, act_dim, BUFFER_SIZE, device, seed=SEED)
    buffer.add(data)
    torch.manual_seed(SEED)
    learner = OnlineLearner(
        SACLag(obs_dim, act_dim, cfg, networks, device),
        DualAscent(task.cost_limit, lr=LAMBDA_LR),
        make_env(task.name),  # improve() never steps it
        buffer,
        SEED,
    )
    tensors = {k: torch.as_tensor(v, device=device) for k, v in data.items()}
    minimal = MinimalSACLag(obs_dim, act_dim, cfg, networks, tensors, device)
    steps_per_update = cfg.batch_size // cfg.minibatch_size

    def marvel() -> float:
        for _ in range(sizes.improves):
            learner.improve(EPISODE_COST)
        return sizes.improves * cfg.updates_per_iteration * steps_per_update

    def reference() -> float:
        for _ in range(sizes.improves * cfg.updates_per_iteration):
            minimal.update(task.cost_limit)
        return sizes.improves * cfg.updates_per_iteration * steps_per_update

    marvel()  # warm-up: allocator, Adam state, first-call dispatch
    reference()
    rate, minimal_rate, ratio = compare(marvel, reference, sizes.update_repeats, device)
    learner.env.close()
    return {"marvel": rate, "minimal": minimal_rate, "ratio": ratio}


def bench_updates(
    task: TaskSpec,
    obs_dim: int,
    act_dim: int,
    networks: NetworkSizes,
    device: torch.device,
    sizes: Sizes,
) -> dict[str, Any]:
    """The paper's schedule (minibatch 64) and one step per batch of 256, against the minimal
    loop and the machine's GEMM peak."""
    gemm = {
        f"{m}x{k}x{n}": gemm_flops(m, k, n, sizes.update_repeats, device) for m, k, n in GEMM_SHAPES
    }
    peak = max(gemm.values())
    paper = SACLagConfig()  # batch 256 in minibatches of 64, 5 updates per improve()
    b256 = SACLagConfig(minibatch_size=paper.batch_size)
    rates = bench_update(task, obs_dim, act_dim, paper, networks, device, sizes)
    rates_b256 = bench_update(task, obs_dim, act_dim, b256, networks, device, sizes)
    flops = update_matmul_flops(obs_dim, act_dim, networks, paper.minibatch_size)
    flops_b256 = update_matmul_flops(obs_dim, act_dim, networks, b256.minibatch_size)
    return {
        "updates_per_s": rates["marvel"] * paper.minibatch_size / paper.batch_size,
        "minibatch_steps_per_s": rates["marvel"],
        "minimal_minibatch_steps_per_s": rates["minimal"],
        "ratio_to_minimal": rates["ratio"],
        "flops_per_minibatch_step": flops,
        "achieved_flops": flops * rates["marvel"],
        "gemm_flops_peak": peak,
        "gemm_flops_by_shape": gemm,
        "fraction_of_gemm_peak": flops * rates["marvel"] / peak,
        "minimal_fraction_of_gemm_peak": flops * rates["minimal"] / peak,
        "minibatch_steps_per_s_b256": rates_b256["marvel"],
        "minimal_minibatch_steps_per_s_b256": rates_b256["minimal"],
        "ratio_to_minimal_b256": rates_b256["ratio"],
        "achieved_flops_b256": flops_b256 * rates_b256["marvel"],
        "fraction_of_gemm_peak_b256": flops_b256 * rates_b256["marvel"] / peak,
        "minimal_fraction_of_gemm_peak_b256": flops_b256 * rates_b256["minimal"] / peak,
    }


# ----------------------------------------------------------------------------- collect, main


def bench_offline(
    task: TaskSpec,
    obs_dim: int,
    act_dim: int,
    networks: NetworkSizes,
    device: torch.device,
    sizes: Sizes,
) -> dict[str, float]:
    """Offline pretraining steps/s of CPQ, BEAR-Lag and BCQ-Lag at OSRL's defaults (batch 512, VAE
    [400, 400]) and the task's network sizes, on uniform batches of a filled buffer."""
    buffer = ReplayBuffer(obs_dim, act_dim, BUFFER_SIZE, device, SEED)
    buffer.add(random_transitions(obs_dim, act_dim, BUFFER_SIZE))
    results: dict[str, float] = {}
    for name, learner_cls, cfg in (
        ("cpq", CPQ, CPQConfig()),
        ("bearl", BEARL, BEARLConfig()),
        ("bcql", BCQL, BCQLConfig()),
    ):
        learner = learner_cls(
            obs_dim, act_dim, networks, cfg, task.cost_limit, task.max_episode_steps, device
        )

        def steps(learner: Any = learner, batch_size: int = cfg.batch_size) -> float:
            for _ in range(sizes.offline_steps):
                learner.update(buffer.sample(batch_size))
            return sizes.offline_steps

        steps()  # warm-up
        results[f"{name}_steps_per_s"] = max(timed_rates({name: steps}, 3, device)[name])
    return results


def bench_collect(task: TaskSpec, device: torch.device, sizes: Sizes) -> dict[str, float]:
    """Seconds per 100k transitions of ``collect_dataset`` with the pipeline's default recipe."""
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: first HDF5 write and CR plot (matplotlib's font cache), first updates
        collect_dataset(task, CollectConfig(), 2, SEED, device, Path(tmp) / "warmup.hdf5")
        start = time.perf_counter()
        collect_dataset(
            task, CollectConfig(), sizes.collect_episodes, SEED, device, Path(tmp) / "b.hdf5"
        )
        elapsed = time.perf_counter() - start
        transitions = json.loads((Path(tmp) / "b.json").read_text())["transitions"]
    return {
        "s_per_100k_transitions": elapsed / transitions * 1e5,
        "episodes": sizes.collect_episodes,
        "transitions": transitions,
    }


def bench_command(overrides: list[str]) -> dict[str, Any]:
    """``python run.py logger=none <overrides>`` as a child process with an empty cache: its
    wall time, its own peak RSS (``wait4``) and the stage times of its ``summary.json``."""
    with tempfile.TemporaryDirectory() as tmp, open(f"{tmp}/log", "w+") as log:
        command = [sys.executable, "run.py", "logger=none", f"hydra.run.dir={tmp}/run", *overrides]
        start = time.perf_counter()
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "MARVEL_CACHE": f"{tmp}/cache"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read()[-3000:]}")
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    # ru_maxrss: KiB on Linux
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "stages_s": summary["timings"]}


def bench_main_command(sizes: Sizes) -> dict[str, Any]:
    """The README's main command, ``python run.py`` (W&B off), in this process's numerics."""
    if not sizes.main_command:
        return {"wall_s": None, "peak_rss_mb": None}
    return bench_command([])


# ----------------------------------------------------------------------------- report


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "cpu": numerics.cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"update": {"updates_per_s": x}} -> {"update.updates_per_s": x}"""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Figures where more is better (throughputs) or less is better (time, memory); the rest (ratios
# to a reference measured in the same run, FLOP counts) are not compared across runs.
HIGHER_IS_BETTER = ("_per_s", "_per_s_b256")
LOWER_IS_BETTER = ("wall_s", "peak_rss_mb", "s_per_100k_transitions")
REGRESSION = 0.9  # slower than 0.9x the recorded figure: flagged


def compare_with_baseline(results: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Speed-up of each throughput, time and memory figure over ``baseline`` (> 1: better),
    and the figures that regressed; empty when the baseline ran on another machine or mode."""
    recorded_settings = {"numerics": "native", **baseline["settings"]}  # recorded before issue 28
    same = (
        baseline["machine"]["cpu"] == results["machine"]["cpu"]
        and baseline["machine"]["cores"] == results["machine"]["cores"]
        and recorded_settings == results["settings"]
    )
    if not same:
        return {"comparable": False}
    now, before = flatten(results), flatten(baseline)
    speedups = {}
    for key, value in now.items():
        old = before.get(key)
        if not isinstance(value, float) or not isinstance(old, float) or old <= 0 or value <= 0:
            continue
        if key.endswith(HIGHER_IS_BETTER):
            speedups[key] = value / old
        elif key.endswith(LOWER_IS_BETTER):
            speedups[key] = old / value
    return {
        "comparable": True,
        "recorded": baseline["machine"]["date"],
        "speedup": speedups,
        "regressions": sorted(k for k, v in speedups.items() if v < REGRESSION),
    }


def print_table(results: dict[str, Any]) -> None:
    flat = flatten({k: v for k, v in results.items() if k != "vs_baseline"})
    speedups = results.get("vs_baseline", {}).get("speedup", {})
    width = max(map(len, flat))
    for name, value in flat.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        if name in speedups:
            flag = "  REGRESSION" if speedups[name] < REGRESSION else ""
            text = f"{text:<12} {speedups[name]:.2f}x the recorded figure{flag}"
        print(f"{name:<{width}}  {text}")
    comparison = results.get("vs_baseline")
    if comparison is None:
        print("no recorded figures to compare with")
    elif not comparison["comparable"]:
        print("recorded figures are from another machine or mode: not compared")
    else:
        regressions = comparison["regressions"]
        print(
            f"against the figures recorded {comparison['recorded']}: "
            + (f"REGRESSION in {', '.join(regressions)}" if regressions else "no regression")
        )


PORTABLE_COST = 0.85  # portable below 0.85x native's speed: costs more than 15%


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure in each numerics mode (a child process each, one after the other), and
    portable's speed relative to native's for each throughput and time (< 1: portable slower)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in numerics.MODES:
            out = Path(tmp) / f"{mode}.json"
            # this command's arguments, the later --numerics and --json overriding its own
            command = [sys.executable, __file__, *sys.argv[1:], "--numerics", mode, "--json", out]
            print(f"[bench] numerics={mode} ...", file=sys.stderr, flush=True)
            subprocess.run(command, check=True, env=numerics.environment(mode), stdout=sys.stderr)
            results[mode] = json.loads(out.read_text())
    portable, native = flatten(results["portable"]), flatten(results["native"])
    speed = {}
    for key, value in portable.items():
        old = native.get(key)
        if isinstance(value, float) and isinstance(old, float) and value > 0 and old > 0:
            if key.endswith(HIGHER_IS_BETTER):
                speed[key] = value / old
            elif key.endswith(LOWER_IS_BETTER):
                speed[key] = old / value
    results["portable_speed"] = speed
    return results


def print_side_by_side(results: dict[str, Any]) -> None:
    portable, native = flatten(results["portable"]), flatten(results["native"])
    speed = results["portable_speed"]
    width = max(map(len, portable))
    print(f"{'figure':<{width}}  {'portable':>12}  {'native':>12}  portable / native speed")
    for name, value in portable.items():
        if name.startswith("vs_baseline"):
            continue
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (value, native.get(name))]
        ratio = speed.get(name)
        flag = "  (costs > 15%)" if ratio is not None and ratio < PORTABLE_COST else ""
        note = f"{ratio:.2f}x{flag}" if ratio is not None else ""
        print(f"{name:<{width}}  {cells[0]:>12}  {cells[1]:>12}  {note}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure in this process's numerics mode ``args.numerics``."""
    sizes = QUICK if args.quick else FULL
    threads = numerics.torch_threads(args.numerics, 0)
    torch.set_num_threads(threads or torch.get_num_threads())  # pinned and reported
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = task_spec(args.env)
    env_conf = OmegaConf.load(ROOT / "conf" / "env" / f"{task.name}.yaml")
    networks = NetworkSizes(**OmegaConf.to_container(env_conf.networks))
    env = StepCounter(make_env(task.name, seed=SEED))
    obs_dim, act_dim = space_dims(env)
    torch.manual_seed(SEED)
    actor = SquashedGaussianActor(obs_dim, act_dim, networks.hidden_sizes).to(device)

    results: dict[str, Any] = {
        "machine": machine_info(device),
        "settings": {
            "task": task.name,
            "quick": args.quick,
            "device": str(device),
            "numerics": args.numerics,
            "hidden_sizes": networks.hidden_sizes,  # actor and Q_r
            "cost_hidden_sizes": networks.cost_hidden_sizes,  # Q_c
        },
    }
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "rollout": lambda: bench_rollout(env, actor, device, sizes),
        "eval": lambda: bench_eval(env, actor, task, device, sizes),
        "update": lambda: bench_updates(task, obs_dim, act_dim, networks, device, sizes),
        "offline": lambda: bench_offline(task, obs_dim, act_dim, networks, device, sizes),
        "collect": lambda: bench_collect(task, device, sizes),
        "main_command": lambda: bench_main_command(sizes),
    }
    if args.paper:
        sections["paper_command"] = lambda: bench_command([f"env={task.name}", "budget=paper"])
    for name, bench in sections.items():
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = bench()
        print(f"[bench] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    env.close()

    baseline = args.baseline or RECORDS / f"reference_{'quick' if args.quick else 'full'}.json"
    if baseline.is_file():
        results["vs_baseline"] = compare_with_baseline(results, json.loads(baseline.read_text()))
    return results


def main() -> None:
    args = parse_args()
    if args.numerics == "both":
        results = side_by_side(args)
        print_side_by_side(results)
    else:
        try:
            numerics.require(args.numerics)
        except MarvelError:  # numpy and torch loaded in another mode: again, in this one
            environment = numerics.environment(args.numerics)
            os.execve(sys.executable, [sys.executable, *sys.argv], environment)
        results = measure(args)
        print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
