"""Training speed: SAC-Lag updates/s through ``OnlineLearner.improve`` against a minimal
hand-written torch loop of the same math and against the machine's fp32 GEMM rate (with the FLOPs
an update needs, counted analytically), and the offline algorithms' gradient steps/s."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marvel import nets
from marvel.data.buffer import ReplayBuffer
from marvel.envs import TaskSpec, make_env
from marvel.lagrange import DualAscent
from marvel.offline.bcql import BCQL, BCQLConfig
from marvel.offline.bearl import BEARL, BEARLConfig
from marvel.offline.cpq import CPQ, CPQConfig
from marvel.online import OnlineLearner
from marvel.sac_lag import SACLag, SACLagConfig
from marvel.start import NetworkSizes
from suite import BUFFER_SIZE, SEED, Sizes, compare, random_transitions, timed_rates

EPISODE_COST = 25.0  # J_c fed to the Lagrange controller during the update benchmark
LAMBDA_LR = 1e-4  # the Lagrange multiplier's step size (BallCircle's) in both update loops
GEMM_SHAPES = ((1024, 1024, 1024), (256, 256, 256), (64, 256, 256))  # (m, k, n)


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
