"""Checkpoints: atomic writes, safe loads (``weights_only=True``: a shared file cannot run code)."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from marvel.errors import CheckpointError
from marvel.fsutil import atomic_write
from marvel.nets import SquashedGaussianActor

FORMAT = "marvel-checkpoint/2"
LAST = "last.pt"


CHECKPOINT_FIX = (
    "a run dir's own checkpoint starts over with resume=never; checkpoint= needs a .pt file "
    "that marvel wrote"
)


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, Any],
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically;
    ``before_rename(tmp)`` sees the whole file before it takes its name (to record its hash)."""

    def write(tmp: Path) -> None:
        torch.save({"format": FORMAT, **state}, tmp)
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a marvel checkpoint on the CPU; raise CheckpointError with the fix if unusable."""
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
            f"{file} is not a loadable marvel checkpoint ({what}); {CHECKPOINT_FIX}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{file} is not a loadable marvel checkpoint ({first_line}); it may be truncated "
            f"or from another program: {CHECKPOINT_FIX}"
        ) from None
    written = state.get("format") if isinstance(state, dict) else None
    if isinstance(written, str) and written.startswith("marvel-checkpoint/") and written != FORMAT:
        raise CheckpointError(
            f"{file} was written by another version of marvel (format {written}; this one reads "
            f"{FORMAT}); use that version, or run again (resume=never in its run dir)"
        )
    if written != FORMAT:
        raise CheckpointError(f"{file} is not a marvel checkpoint (expected format {FORMAT})")
    return state


def checkpoint_task(path: str | os.PathLike) -> dict[str, Any] | str:
    """The task the checkpoint at ``path`` was trained on: its recorded spec (``TaskSpec``
    fields), or the name of a paper task in checkpoints that record only the name."""
    state = load_checkpoint(path)
    if "task" not in state:
        raise CheckpointError(
            f"{resolve_checkpoint_path(path)} does not record its task (written by an older "
            "marvel); evaluate it with the version that wrote it"
        )
    return state.get("task_spec", str(state["task"]))


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
    """The actor of a finetuning checkpoint or of a pretrained model (a cache entry under
    ``$MARVEL_CACHE/pretrained/``), ready to act, and the checkpoint's metadata.

    Raises CheckpointError when the file does not hold a policy this code can rebuild.
    """
    state = load_checkpoint(path)
    try:
        obs_dim, act_dim = state["dims"]
        if state.get("kind") == "pretrained":
            hidden_sizes = state["pretrained"]["sizes"]["hidden_sizes"]
            actor_state = state["pretrained"]["actor"]
        elif state.get("kind") == "pretraining":  # a run in (or done with) its offline stage
            hidden_sizes = state["spec"]["sizes"]["hidden_sizes"]
            actor_state = state["learner"]["actor"]
        else:
            hidden_sizes = state["sizes"]["hidden_sizes"]
            actor_state = state["learner"]["agent"]["actor"]
        actor = SquashedGaussianActor(obs_dim, act_dim, hidden_sizes)
        actor.load_state_dict(actor_state)
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"{resolve_checkpoint_path(path)} holds no usable policy ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r})"
        ) from None
    metadata = {k: state[k] for k in ("kind", "task", "experiment", "seed", "dims") if k in state}
    return actor.to(device).eval(), metadata
