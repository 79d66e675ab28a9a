"""Networks: the squashed-Gaussian log-probability, the vectorized critic ensemble, the fused
Adam and the frozen-critic policy loss."""

from __future__ import annotations

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from marvel.nets import CriticEnsemble, SquashedGaussianActor, adam, frozen


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


def test_act_draws_the_same_actions_as_forward() -> None:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(5, 3, [32, 32])
    obs = torch.randn(16, 5)
    torch.manual_seed(1)
    sampled = actor(obs)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(actor.act(obs), sampled, rtol=0, atol=0)


def test_deterministic_action_is_tanh_mean() -> None:
    actor = SquashedGaussianActor(4, 2, [16, 16])
    obs = torch.randn(8, 4)
    h = torch.relu(actor.trunk(obs))
    torch.testing.assert_close(actor.act(obs, deterministic=True), torch.tanh(actor.mu(h)))
    assert actor.act(obs).requires_grad is False
    # its log-probability is the density at u = mu: N(mu; mu, sigma^2) / (1 - tanh(mu)^2)
    mu, log_std = actor.mu(h), actor.log_std(h).clamp(-20, 2)
    log_det = torch.log1p(-(torch.tanh(mu) ** 2))
    expected = (Normal(mu, log_std.exp()).log_prob(mu) - log_det).sum(-1)
    torch.testing.assert_close(actor(obs, deterministic=True)[1], expected, rtol=1e-5, atol=1e-5)


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


def test_gaussian_kl_matches_torch() -> None:
    from torch.distributions import Independent, kl_divergence

    from marvel.nets import gaussian_kl

    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ls_p, ls_q = torch.randn(5, 3, generator=g) * 0.3, torch.randn(5, 3, generator=g) * 0.3
    expected = kl_divergence(
        Independent(Normal(mu_p, ls_p.exp()), 1), Independent(Normal(mu_q, ls_q.exp()), 1)
    )
    torch.testing.assert_close(gaussian_kl(mu_p, ls_p, mu_q, ls_q), expected)
    assert torch.allclose(gaussian_kl(mu_p, ls_p, mu_p, ls_p), torch.zeros(5))


def test_conditional_vae_learns_the_behaviour() -> None:
    from marvel.nets import ConditionalVAE

    torch.manual_seed(0)
    vae = ConditionalVAE(4, 2, [64, 64], latent_dim=4)
    obs = torch.randn(256, 4)
    act = torch.tanh(obs[:, :2] * 1.5)  # a deterministic behaviour policy
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = vae.loss(obs, act, 0.5).item()
    for _ in range(300):
        loss = vae.loss(obs, act, 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    assert vae.decode(obs).shape == act.shape and vae.decode(obs).abs().max() <= 1.0
    # out-of-distribution actions score a higher negative ELBO than the behaviour's own
    assert vae.loss(obs, -act, 0.5) > 2 * vae.loss(obs, act, 0.5)


def test_frozen_critics_give_the_same_actor_gradients_and_none_of_their_own() -> None:
    torch.manual_seed(0)
    actor, critic = SquashedGaussianActor(6, 2, [16, 16]), CriticEnsemble(6, 2, [16, 16], 2)
    obs = torch.randn(32, 6)

    def actor_loss() -> torch.Tensor:
        torch.manual_seed(1)
        act, log_prob = actor(obs)
        return (-critic(obs, act).min(0).values + 0.1 * log_prob).mean()

    actor_loss().backward()
    expected = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    with frozen(critic):
        loss = actor_loss()
    loss.backward()
    for p, g in zip(actor.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None and p.requires_grad for p in critic.parameters())


def test_fused_adam_matches_the_per_tensor_loop() -> None:
    torch.manual_seed(0)
    net = CriticEnsemble(6, 2, [16, 16], 2)
    reference = CriticEnsemble(6, 2, [16, 16], 2)
    reference.load_state_dict(net.state_dict())
    fused = adam(net.parameters(), lr=1e-3)
    loop = torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=False)
    for _ in range(20):
        obs, act = torch.randn(64, 6), torch.randn(64, 2)
        for model, optimizer in ((net, fused), (reference, loop)):
            optimizer.zero_grad()
            model(obs, act).pow(2).mean().backward()
            optimizer.step()
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
