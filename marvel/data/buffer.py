"""A preallocated float32 replay buffer on the training device, with vectorized sampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Batch = dict[str, torch.Tensor]
FIELDS = ("obs", "act", "reward", "cost", "next_obs", "done")


class ReplayBuffer:
    """FIFO ring buffer of transitions (s, a, r, c, s', done).

    ``done`` ends the bootstrap of every Bellman target that samples the buffer. Added blocks
    carry the terminal flag ``done`` and the time-limit flag ``timeout`` apart (as DSRL stores
    them); by default both end the bootstrap (the released code online, OSRL offline: METHOD.md
    section 4, "Done flags"). ``bootstrap_through_time_limit=True`` keeps terminals only, the
    textbook treatment of a truncation.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        capacity: int,
        device: torch.device,
        seed: int = 0,
        bootstrap_through_time_limit: bool = False,
    ) -> None:
        self.capacity = int(capacity)
        self.device = device
        self.bootstrap_through_time_limit = bootstrap_through_time_limit
        shapes = {
            "obs": (obs_dim,),
            "act": (act_dim,),
            "reward": (),
            "cost": (),
            "next_obs": (obs_dim,),
            "done": (),
        }
        self.storage = {
            k: torch.zeros((self.capacity, *s), dtype=torch.float32, device=device)
            for k, s in shapes.items()
        }
        self.size = 0
        self.pos = 0
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        """Append a block of transitions (e.g. one episode), each array with a leading N axis:
        ``obs``, ``act``, ``reward``, ``cost``, ``next_obs``, ``done`` (terminal), ``timeout``."""
        if not self.bootstrap_through_time_limit:
            transitions = {
                **transitions,
                "done": np.maximum(transitions["done"], transitions["timeout"]),
            }
        n = len(transitions["obs"])
        if n > self.capacity:
            transitions = {k: v[-self.capacity :] for k, v in transitions.items()}
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        for k in FIELDS:
            block = torch.as_tensor(transitions[k], dtype=torch.float32)
            self.storage[k][idx] = block.to(self.device, non_blocking=True)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """Uniform sample with replacement, one gather per field."""
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return {k: v[idx] for k, v in self.storage.items()}

    @classmethod
    def from_dataset(
        cls,
        data: dict[str, np.ndarray],
        device: torch.device,
        seed: int = 0,
        bootstrap_through_time_limit: bool = False,
    ) -> ReplayBuffer:
        """A buffer holding a whole DSRL-format dataset (its terminals and timeouts)."""
        obs = data["observations"]
        buffer = cls(
            obs.shape[1],
            data["actions"].shape[1],
            len(obs),
            device,
            seed,
            bootstrap_through_time_limit,
        )
        buffer.add(
            {
                "obs": obs,
                "act": data["actions"],
                "reward": data["rewards"],
                "cost": data["costs"],
                "next_obs": data["next_observations"],
                "done": data["terminals"],
                "timeout": data["timeouts"],
            }
        )
        return buffer

    def state_dict(self) -> dict[str, Any]:
        return {
            "storage": {k: v[: self.size].cpu() for k, v in self.storage.items()},
            "size": self.size,
            "pos": self.pos,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        for k, v in state["storage"].items():
            self.storage[k][:size] = v.to(self.device)
        self.size, self.pos = size, int(state["pos"])
        self.generator.set_state(state["generator"])
