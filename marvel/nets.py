"""Networks: MLPs, the squashed-Gaussian actor, vectorized critic ensembles (METHOD.md s. 2).

One architecture serves offline pretraining and online finetuning, so the offline -> online
transfer is a strict ``load_state_dict`` (METHOD.md section 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the usual SAC clamp (SpinningUp, FSRL, OSRL)


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """ReLU MLP: in -> hidden... -> out (linear output)."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class SquashedGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), actions in [-1, 1]^act_dim."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden_sizes[:-1], hidden_sizes[-1])
        self.mu = nn.Linear(hidden_sizes[-1], act_dim)
        self.log_std = nn.Linear(hidden_sizes[-1], act_dim)

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample a reparameterized action and its log-probability log pi(a|s), shape (B,).

        With ``deterministic`` the action is tanh(mu) (evaluation, METHOD.md section 7).
        """
        h = F.relu(self.trunk(obs))
        mu = self.mu(h)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        # log N(u; mu, std) minus the tanh Jacobian, log(1 - tanh(u)^2) in its stable form.
        gauss_log_prob = -0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), (gauss_log_prob - log_det).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for rollouts: no autograd graph."""
        return self(obs, deterministic)[0]


class EnsembleLinear(nn.Module):
    """``num_heads`` independent linear layers applied as one batched matmul."""

    def __init__(self, num_heads: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per head
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (heads, B, in) -> (heads, B, out)."""
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
            x = F.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)
