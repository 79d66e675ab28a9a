"""Checkpoint files: atomic writes, safe loads (``weights_only=True``: a shared file cannot run
code) of the records of ``marvel.checkpoint_records``, and a saved policy ready to act."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from marvel.checkpoint_records import (
    CHECKPOINT_FIX,
    CHECKPOINT_KINDS,
    FORMAT,
    Checkpoint,
    FinetuningCheckpoint,
)
from marvel.errors import CheckpointError
from marvel.fsutil import atomic_write
from marvel.nets import SquashedGaussianActor

LAST = "last.pt"


def save_checkpoint(
    path: str | os.PathLike,
    record: Checkpoint,
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``record`` atomically; ``before_rename(tmp)`` sees the whole file before it takes
    its name (to record its hash)."""

    def write(tmp: Path) -> None:
        torch.save({"format": FORMAT, **record.to_state()}, tmp)
        if before_rename is not None:
            before_rename(tmp)

    try:
        return atomic_write(path, write)
    except (OSError, RuntimeError) as err:  # a full disk: torch raises RuntimeError
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot write {path} ({first_line}); free space on its filesystem (df -h "
            f"{Path(path).parent}) and rerun the same command: it resumes from the last "
            "checkpoint written"
        ) from None


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A .pt file, or a run dir whose ``checkpoints/last.pt`` is meant."""
    path = Path(path).expanduser()
    return path / "checkpoints" / LAST if path.is_dir() else path


def load_checkpoint(
    path: str | os.PathLike,
    kinds: tuple[type[Checkpoint], ...] = tuple(CHECKPOINT_KINDS.values()),
    fix: str = CHECKPOINT_FIX,
) -> Checkpoint:
    """The record in the marvel checkpoint at ``path`` (loaded on the CPU), one of ``kinds``;
    CheckpointError with ``fix`` if unusable."""
    file = resolve_checkpoint_path(path)
    if not file.is_file():
        raise CheckpointError(
            f"no checkpoint at {file}: pass checkpoint=<run dir> (holding checkpoints/{LAST}) "
            "or checkpoint=<file.pt>"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message would suggest weights_only=False: unsafe
        what = (
            "it holds objects other than tensors, numbers and strings, and marvel loads no code "
            "from checkpoints"
            if zipfile.is_zipfile(file)
            else "it is not a torch file"
        )
        raise CheckpointError(
            f"{file} is not a loadable marvel checkpoint ({what}); {fix}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{file} is not a loadable marvel checkpoint ({first_line}); it may be truncated "
            f"or from another program: {fix}"
        ) from None
    written = state.get("format") if isinstance(state, dict) else None
    if isinstance(written, str) and written.startswith("marvel-checkpoint/") and written != FORMAT:
        raise CheckpointError(
            f"{file} was written by another version of marvel (format {written}; this one reads "
            f"{FORMAT}); use that version, or run again (resume=never in its run dir)"
        )
    if written != FORMAT:
        raise CheckpointError(f"{file} is not a marvel checkpoint (expected format {FORMAT})")
    kind = CHECKPOINT_KINDS.get(state.get("kind"))
    if kind not in kinds:
        wanted = " or ".join(repr(k.KIND) for k in kinds)
        raise CheckpointError(
            f"{file} holds a {state.get('kind')!r} checkpoint where a {wanted} one is needed; {fix}"
        )
    return kind.from_state(state, file, fix)


def checkpoint_task(path: str | os.PathLike) -> dict[str, Any]:
    """The task (``TaskSpec`` fields) that the checkpoint at ``path`` was trained on."""
    return load_checkpoint(path).task_spec


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states, for exact resumption (marvel draws NumPy randomness from
    its own seeded Generators, whose states live with their owners)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_policy(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[SquashedGaussianActor, dict[str, Any]]:
    """The actor of a run dir's checkpoint or of a pretrained model (a cache entry under
    ``$MARVEL_CACHE/pretrained/``), ready to act, and the checkpoint's metadata (its kind,
    task, observation and action sizes; a finetuning run's preset and seed).

    Raises CheckpointError when the file does not hold a policy this code can rebuild.
    """
    record = load_checkpoint(path)
    try:
        actor = SquashedGaussianActor(*record.dims, record.hidden_sizes)
        actor.load_state_dict(record.actor_state)
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"{resolve_checkpoint_path(path)} holds no usable policy ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r})"
        ) from None
    metadata = {"kind": record.KIND, "task": record.task, "dims": record.dims}
    if isinstance(record, FinetuningCheckpoint):
        metadata |= {"experiment": record.experiment, "seed": record.seed}
    return actor.to(device).eval(), metadata
