"""Networks: the squashed-Gaussian log-probability and the vectorized critic ensemble."""

from __future__ import annotations

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from marvel.nets import CriticEnsemble, SquashedGaussianActor


def test_log_prob_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(5, 3, [32, 32])
    obs = torch.randn(64, 5)
    torch.manual_seed(1)
    action, log_prob = actor(obs)
    h = torch.relu(actor.trunk(obs))
    mu, log_std = actor.mu(h), actor.log_std(h).clamp(-20, 2)
    dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform(cache_size=1)])
    torch.manual_seed(1)
    u = mu + log_std.exp() * torch.randn_like(mu)
    expected = dist.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(action, torch.tanh(u))
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)


def test_deterministic_action_is_tanh_mean() -> None:
    actor = SquashedGaussianActor(4, 2, [16, 16])
    obs = torch.randn(8, 4)
    h = torch.relu(actor.trunk(obs))
    torch.testing.assert_close(actor.act(obs, deterministic=True), torch.tanh(actor.mu(h)))
    assert actor.act(obs).requires_grad is False


def test_ensemble_heads_are_independent_mlps() -> None:
    torch.manual_seed(0)
    critic = CriticEnsemble(6, 2, [16, 16], num_heads=3)
    obs, act = torch.randn(10, 6), torch.randn(10, 2)
    q = critic(obs, act)
    assert q.shape == (3, 10)
    x = torch.cat([obs, act], -1)
    for head in range(3):
        h = x
        for i, layer in enumerate(critic.layers):
            h = h @ layer.weight[head] + layer.bias[head]
            if i < len(critic.layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(q[head], h.squeeze(-1))
    # one head's loss moves only that head's gradients
    critic.zero_grad()
    critic(obs, act)[1].sum().backward()
    grads = critic.layers[0].weight.grad
    assert grads[0].abs().sum() == 0 and grads[2].abs().sum() == 0 and grads[1].abs().sum() > 0
