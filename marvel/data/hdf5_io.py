"""DSRL-format HDF5 files: writing them, their episode structure, and DSRL's CR plot."""

from __future__ import annotations

import os

import h5py
import numpy as np

from marvel.fsutil import atomic_write

DSRL_KEYS: tuple[str, ...] = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "costs",
    "terminals",
    "timeouts",
)


def write_dsrl_hdf5(path: str | os.PathLike, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` in DSRL's schema, atomically: one gzip-compressed float32 dataset per key.

    observations/next_observations/actions are (N, dim); rewards/costs/terminals/timeouts are
    (N,), the two flags stored as 0/1 (dsrl compares them with ``== 1``). Identical data gives
    identical bytes (no timestamps), so the file's hash identifies its content.
    """
    missing = [key for key in DSRL_KEYS if key not in data]
    if missing:
        raise KeyError(f"cannot write a DSRL file without {', '.join(missing)}")
    arrays = {key: np.asarray(data[key], dtype=np.float32) for key in DSRL_KEYS}
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"DSRL arrays must have one length, got {lengths}")

    def write(tmp: os.PathLike) -> None:
        with h5py.File(tmp, "w") as f:
            for key, array in arrays.items():
                f.create_dataset(key, data=array, compression="gzip", track_times=False)

    atomic_write(path, write)


def episode_returns(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode (reward return, cost return), episodes ending at ``terminals | timeouts``.

    A trailing partial episode (no end flag) is dropped.
    """
    done = (np.asarray(data["terminals"]) == 1) | (np.asarray(data["timeouts"]) == 1)
    ends = np.flatnonzero(done)
    if len(ends) == 0:
        return np.zeros(0), np.zeros(0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    stop = ends[-1] + 1

    def sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.asarray(values[:stop], dtype=np.float64), starts)

    return sums(data["rewards"]), sums(data["costs"])


def save_cr_plot(
    costs: np.ndarray,
    rewards: np.ndarray,
    cost_limit: float,
    path: str | os.PathLike,
    title: str,
) -> None:
    """DSRL's CR plot, as a PNG written atomically: episode cost return (x) vs reward return (y).

    Drawn on a bare ``Figure`` (Agg canvas), so no pyplot state or backend choice leaks out.
    """
    from matplotlib.figure import Figure  # imported where a plot is drawn: runs start faster

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(costs, rewards, s=10, alpha=0.6, color="dodgerblue", label="episodes")
    ax.axvline(cost_limit, linestyle="--", color="tomato", label=f"cost limit {cost_limit:g}")
    ax.set_xlabel("Cost return")
    ax.set_ylabel("Reward return")
    ax.set_title(title)
    ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
