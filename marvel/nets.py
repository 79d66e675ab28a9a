"""Networks: MLPs, the squashed-Gaussian actor, vectorized critic ensembles (METHOD.md s. 2).

One architecture serves offline pretraining and online finetuning, so the offline -> online
transfer is a strict ``load_state_dict`` (METHOD.md section 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marvel import numerics

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the usual SAC clamp (SpinningUp, FSRL, OSRL)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """zero_grad, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one kernel for all tensors, CPU and CUDA; the same update as
    the per-tensor loop, measured faster per step in benchmarks/README.md)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Build a loss through ``modules`` without their weight gradients: inside the block their
    parameters leave autograd, so a policy loss scored by the critics backpropagates to the
    actions (and the actor) only, not into critic gradients that nobody uses."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging: theta_bar <- (1 - tau) theta_bar + tau theta."""
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)


class _OpenBLASMatmul(torch.autograd.Function):
    """a @ b of CPU tensors (matrices, or stacks of as many) and its gradients, by numpy's BLAS."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = (t.detach().numpy() for t in ctx.saved_tensors)
        g = grad.detach().numpy()
        grad_a = np.matmul(g, b.swapaxes(-1, -2)) if ctx.needs_input_grad[0] else None
        grad_b = np.matmul(a.swapaxes(-1, -2), g) if ctx.needs_input_grad[1] else None
        return tuple(None if x is None else torch.from_numpy(x) for x in (grad_a, grad_b))


def on_openblas(x: Tensor) -> bool:
    """Whether products with ``x`` run on numpy's OpenBLAS: CPU tensors under portable numerics
    (marvel/numerics.py). torch's own BLAS, MKL, runs other code on AMD than on Intel CPUs
    except in its SSE2 branch, at a third of the speed (benchmarks/README.md)."""
    return x.device.type == "cpu" and numerics.in_effect() == "portable"


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b (matrices, or stacks of as many): OpenBLAS's where ``on_openblas``, else torch's."""
    if not on_openblas(a):
        return a @ b
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _OpenBLASMatmul.apply(a, b)
    return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))  # no graph


class _ExactSqrt(torch.autograd.Function):
    """sqrt(x) of a CPU tensor, correctly rounded (numpy's), and its gradient."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        root = torch.from_numpy(np.sqrt(x.detach().numpy()))
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (root,) = ctx.saved_tensors
        return grad / (2.0 * root)


def sqrt(x: Tensor) -> Tensor:
    """sqrt(x): numpy's, correctly rounded, for CPU tensors under portable numerics (the
    tensors ``on_openblas`` picks; torch's is MKL's, which is not, and rounds otherwise on other
    CPUs), else torch's."""
    return _ExactSqrt.apply(x) if on_openblas(x) else x.sqrt()


class Linear(nn.Linear):
    """nn.Linear whose product is ``matmul``'s: x W^T + b."""

    def forward(self, x: Tensor) -> Tensor:
        if not on_openblas(x):
            return F.linear(x, self.weight, self.bias)
        if x.dim() != 2:  # rows of any leading shape: one product over all of them
            return self(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], self.out_features)
        return matmul(x, self.weight.t()) + self.bias


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """ReLU MLP: in -> hidden... -> out (linear output).

    The ReLUs work in place: a Linear's backward needs its input, never its output.
    """
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class SquashedGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), actions in [-1, 1]^act_dim."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden_sizes[:-1], hidden_sizes[-1])
        self.mu = Linear(hidden_sizes[-1], act_dim)
        self.log_std = Linear(hidden_sizes[-1], act_dim)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the pre-tanh Gaussian."""
        h = F.relu_(self.trunk(obs))
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample a reparameterized action and its log-probability log pi(a|s), shape (B,).

        With ``deterministic`` the action is tanh(mu) (evaluation, METHOD.md section 7).
        """
        u, noise, log_std = self.pre_tanh_sample(obs, deterministic)
        return torch.tanh(u), pre_tanh_log_prob(u, noise, log_std)

    def pre_tanh_sample(
        self, obs: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u = mu + sigma * noise with noise ~ N(0, 1) (noise = 0 if ``deterministic``), the
        noise and log sigma."""
        mu, log_std = self.distribution(obs)
        if deterministic:
            return mu, torch.zeros_like(mu), log_std
        noise = torch.randn_like(mu)
        return torch.addcmul(mu, log_std.exp(), noise), noise, log_std

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for rollouts: no autograd graph and no log-probability (the same draws as
        ``forward``, at ~60% of its cost per env step; benchmarks/README.md)."""
        return torch.tanh(self.pre_tanh_sample(obs, deterministic)[0])


def pre_tanh_log_prob(u: torch.Tensor, noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of a = tanh(u) under pi = tanh(N(mu, sigma^2)), where u = mu + sigma * noise,
    shape (B,):

        log pi(a|s) = sum_i [ log N(u_i; mu_i, sigma_i^2) - log(1 - tanh(u_i)^2) ]
                    = sum_i [ -noise_i^2 / 2 - log sigma_i - log(2 pi) / 2
                              - 2 (log 2 - u_i - softplus(-2 u_i)) ]

    (the change of variables a = tanh(u), with log(1 - tanh(u)^2) in its stable form; the
    log pi of METHOD.md sections 3-4's targets and actor loss). Written
    with t = -2u as sum_i [2 softplus(t_i) - t_i - noise_i^2 / 2 - log sigma_i] minus the
    constants: about half the ops of the textbook form (benchmarks/README.md).
    """
    t = -2.0 * u
    per_dim = 2.0 * F.softplus(t) - t - torch.addcmul(log_std, noise, noise, value=0.5)
    return per_dim.sum(-1) - u.shape[-1] * (0.5 * math.log(2 * math.pi) + 2.0 * math.log(2.0))


def squashed_gaussian_log_prob(
    mu: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """log pi(a|s) of *given* actions a in [-1, 1], shape (B,): ``pre_tanh_log_prob`` at
    u = atanh(clamp(a, -1 + eps, 1 - eps)) (the clamp keeps u finite on the box's edges)."""
    u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
    return pre_tanh_log_prob(u, (u - mu) * torch.exp(-log_std), log_std)


def gaussian_kl(
    mu_p: torch.Tensor, log_std_p: torch.Tensor, mu_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N_p || N_q) of diagonal Gaussians, summed over the last axis.

    tanh is a bijection, so this is also the KL between the two squashed policies.
    """
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mu_p - mu_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


class EnsembleLinear(nn.Module):
    """``num_heads`` independent linear layers applied as one batched matmul.

    A one-unit layer (a critic's output) is a dot product per row, computed as multiply-sum:
    MKL's batched GEMM runs that GEMV shape ~4x slower at two heads (benchmarks/README.md).
    """

    def __init__(self, num_heads: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per head
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (heads, B, in) -> (heads, B, out)."""
        if self.weight.shape[-1] == 1:
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias
        if on_openblas(x):
            return matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class CriticEnsemble(nn.Module):
    """Q_1..Q_H(s, a) as one vectorized network: returns (H, B)."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], num_heads: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        dims = [obs_dim + act_dim, *hidden_sizes, 1]
        self.layers = nn.ModuleList(
            EnsembleLinear(num_heads, d_in, d_out)
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(self.num_heads, -1, -1)
        for layer in self.layers[:-1]:
            x = F.relu_(layer(x))  # in place: a layer's backward needs its input, not output
        return self.layers[-1](x).squeeze(-1)


class ConditionalVAE(nn.Module):
    """Behaviour model p(a|s) as a conditional VAE (BCQ, BEAR and CPQ use one; OSRL's layout).

    Encoder q(z|s,a) = N(mu, sigma^2), decoder a = max_action * tanh(f(s, z)); ``latent_dim``
    is usually 2 * act_dim. ``decode`` without z samples z ~ N(0, 1) clipped to [-0.5, 0.5].
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        latent_dim: int,
        max_action: float = 1.0,
    ) -> None:
        super().__init__()
        self.latent_dim, self.max_action = latent_dim, max_action
        self.encoder = mlp(obs_dim + act_dim, hidden_sizes, 2 * latent_dim)
        self.decoder = mlp(obs_dim + latent_dim, hidden_sizes, act_dim)

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mean and std of q(z|s,a)."""
        mean, std = self.encode(obs, act)
        z = mean + std * torch.randn_like(std)
        return self.decode(obs, z), mean, std

    def encode(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of q(z|s,a)."""
        mean, log_std = self.encoder(torch.cat([obs, act], -1)).chunk(2, -1)
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(obs.shape[0], self.latent_dim, device=obs.device).clamp(-0.5, 0.5)
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], -1)))

    @staticmethod
    def latent_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, std^2) || N(0, I)) per sample, *averaged* over latent dims (OSRL's scale);
        CPQ also uses it as its out-of-distribution score."""
        return -0.5 * (1.0 + 2.0 * std.log() - mean.pow(2) - std.pow(2)).mean(-1)

    def loss(self, obs: torch.Tensor, act: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """The behaviour model's loss as CPQ, BEAR-Lag and BCQ-Lag train it (OSRL's scale):
        L_vae = mean ||a_hat - a||^2 + kl_weight mean KL(q(z|s,a) || N(0, I)), both means over
        the batch and the action / latent dims."""
        recon, mean, std = self(obs, act)
        return F.mse_loss(recon, act) + kl_weight * self.latent_kl(mean, std).mean()
