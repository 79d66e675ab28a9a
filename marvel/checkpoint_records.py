"""The checkpoint format's one owner: a typed record for each kind of checkpoint file, which
every writer and reader goes through (``marvel.checkpoint`` writes and loads the files).

``PretrainingCheckpoint``: a run dir's ``checkpoints/last.pt`` inside its offline stage;
``FinetuningCheckpoint``: the same file during and after finetuning; ``PretrainedEntry``: a model
in the pretrained cache. A change to what a record writes or requires bumps ``FORMAT``, so that
an older file is refused in one line instead of misread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

from marvel.errors import CheckpointError

FORMAT = "marvel-checkpoint/2"
CHECKPOINT_FIX = (
    "a run dir's own checkpoint starts over with resume=never; checkpoint= needs a .pt file "
    "that marvel wrote"
)


@dataclass
class OnlineCounters:
    """How far the online loop has gone."""

    iteration: int = 0
    updates: int = 0
    episodes: int = 0
    env_steps: int = 0
    cumulative_cost: float = 0.0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OnlineCounters:
        return cls(
            iteration=int(state["iteration"]),
            updates=int(state["updates"]),
            episodes=int(state["episodes"]),
            env_steps=int(state["env_steps"]),
            cumulative_cost=float(state["cumulative_cost"]),
        )


@dataclass
class LearnerState:
    """The online loop's state: the agent's networks and optimizers (``SACLag.state_dict``),
    the controller, the replay buffer, the baselines, the exploration noise's RNG, the counters."""

    agent: dict[str, Any]
    controller: dict[str, Any]
    buffer: dict[str, Any]
    baselines: list[dict[str, Any]]
    noise_rng: dict[str, Any]
    counters: OnlineCounters

    def to_state(self) -> dict[str, Any]:
        return {**vars(self), "counters": asdict(self.counters)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LearnerState:
        return cls(
            **{k: state[k] for k in ("agent", "controller", "buffer", "baselines", "noise_rng")},
            counters=OnlineCounters.from_state(state["counters"]),
        )


@dataclass
class FinetuneProgress:
    """What a resumed finetuning run takes from before its loop: the run's summary entries of
    the earlier stages, lambda_0, and the evaluations so far (``EvalResult`` fields)."""

    summary: dict[str, Any]
    lambda_init: float
    initial_eval: dict[str, Any]
    last_eval: dict[str, Any]


Record = TypeVar("Record", bound="CheckpointRecord")


class CheckpointRecord:
    """A checkpoint kind: its fields, written under ``kind`` with the task's name beside its
    spec (``TaskSpec`` fields) and the observation and action sizes."""

    KIND: ClassVar[str]
    task_spec: dict[str, Any]
    dims: list[int]

    @property
    def task(self) -> str:
        return str(self.task_spec["name"])

    def _fields(self) -> dict[str, Any]:
        return dict(vars(self))

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.KIND, "task": self.task, **self._fields()}

    @classmethod
    def _parse(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments from the file's values (nested records parsed)."""
        return values

    @classmethod
    def from_state(
        cls: type[Record], state: dict[str, Any], source: object, fix: str = CHECKPOINT_FIX
    ) -> Record:
        """The record in a loaded checkpoint ``state`` of this kind, read from ``source``;
        CheckpointError (naming ``source`` and ``fix``) when it lacks a field."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        try:
            return cls(**cls._parse({name: state[name] for name in names}))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{source} is not a whole {cls.KIND!r} checkpoint ({type(err).__name__}: "
                f"{err}); {fix}"
            ) from None


@dataclass
class PretrainingCheckpoint(CheckpointRecord):
    """A run dir's checkpoint inside its offline stage (METHOD.md section 2)."""

    KIND: ClassVar[str] = "pretraining"
    task_spec: dict[str, Any]
    dims: list[int]
    config_digest: str
    wandb_run_id: str | None
    spec: dict[str, Any]  # the pretrained model's cache spec (``caches.pretrained_spec``)
    step: int
    learner: dict[str, Any]  # the offline algorithm's ``state_dict``
    sampler: dict[str, Any]  # the dataset sampler's generator state
    rng: dict[str, Any]  # ``rng_state()``
    last: dict[str, float] | None  # the last logged training row

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.spec["sizes"]["hidden_sizes"])

    @property
    def actor_state(self) -> dict[str, Any]:
        return self.learner["actor"]


@dataclass
class FinetuningCheckpoint(CheckpointRecord):
    """A run dir's checkpoint during and after finetuning (METHOD.md section 4)."""

    KIND: ClassVar[str] = "sac_lag"
    task_spec: dict[str, Any]
    experiment: str
    seed: int
    dims: list[int]
    config_digest: str
    agent_config: dict[str, Any]  # ``SACLagConfig`` fields
    sizes: dict[str, Any]  # ``NetworkSizes`` fields
    learner: LearnerState
    rng: dict[str, Any]  # ``rng_state()``
    wandb_run_id: str | None
    progress: FinetuneProgress

    @property
    def iteration(self) -> int:
        return self.learner.counters.iteration

    @property
    def updates(self) -> int:
        return self.learner.counters.updates

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.sizes["hidden_sizes"])

    @property
    def actor_state(self) -> dict[str, Any]:
        return self.learner.agent["actor"]

    def _fields(self) -> dict[str, Any]:
        return {**vars(self), "learner": self.learner.to_state(), "progress": asdict(self.progress)}

    @classmethod
    def _parse(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {
            **values,
            "learner": LearnerState.from_state(values["learner"]),
            "progress": FinetuneProgress(**values["progress"]),
        }


@dataclass
class PretrainedEntry(CheckpointRecord):
    """A model of the pretrained cache: pi_0, Q_r, Q_c (``Pretrained.state_dict``) and the spec
    that keys it (``caches.pretrained_spec``)."""

    KIND: ClassVar[str] = "pretrained"
    task_spec: dict[str, Any]
    dims: list[int]
    spec: dict[str, Any]
    pretrained: dict[str, Any]

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.pretrained["sizes"]["hidden_sizes"])

    @property
    def actor_state(self) -> dict[str, Any]:
        return self.pretrained["actor"]


Checkpoint = PretrainingCheckpoint | FinetuningCheckpoint | PretrainedEntry
CHECKPOINT_KINDS: dict[str, type[Checkpoint]] = {
    kind.KIND: kind for kind in (PretrainingCheckpoint, FinetuningCheckpoint, PretrainedEntry)
}
