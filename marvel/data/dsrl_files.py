"""DSRL dataset files: locate, download, verify, validate and load them.

A file is looked up in the DSRL directory first (``$DSRL_DATASET_DIR``, default
``~/.dsrl/datasets``, dsrl's own convention), then downloaded from DSRL's Hugging Face dataset
repo through ``huggingface_hub`` (its retries, resumable downloads, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE``), else from the first URL mirror that serves it. Files are checked here before
dsrl reads them, so a bad file fails with a one-line message that says how to fix it instead of
an assertion deep inside dsrl.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from tqdm import tqdm

from marvel.data.hdf5_io import DSRL_KEYS
from marvel.envs import TaskSpec, as_task, check_task, make_env, real_std_streams
from marvel.errors import DatasetError, DatasetUnavailableError
from marvel.fsutil import atomic_write, atomic_write_json, locked, sha256_file

with real_std_streams():  # dsrl imports bullet-safety-gym, which needs the real std streams
    from dsrl.infos import DATASET_URLS
    from dsrl.offline_env import OfflineEnvWrapper

# dsrl 0.1.0's own host (data.offline-saferl.org, in dsrl.infos.DATASET_URLS) no longer answers;
# DSRL's HEAD moved the files to this Hugging Face dataset repo, under the same file names.
DEFAULT_HF_REPO = "YYY-45/DSRL"
DEFAULT_MIRRORS: tuple[str, ...] = ("http://data.offline-saferl.org/download/{file}",)

COLLECT_HINT = "or run with data=collect to collect a dataset offline"


@dataclass(frozen=True)
class DatasetIdentity:
    """Which bytes a run trained on.

    ``source`` is ``dsrl:<url>`` (downloaded now), ``dsrl:local`` (already in the DSRL directory),
    ``file`` (a path the user gave) or ``collect`` (collected by marvel.stages.collect).
    """

    path: str
    sha256: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def dsrl_file_name(task: str) -> str:
    """The DSRL file name for ``task``, e.g. ``SafetyBallCircle-v0-80-886.hdf5``."""
    check_task(task)
    return DATASET_URLS[task].rsplit("/", 1)[-1]


def dsrl_dataset_dir() -> Path:
    """The DSRL dataset directory: ``$DSRL_DATASET_DIR`` (read now), else ``~/.dsrl/datasets``."""
    return Path(os.environ.get("DSRL_DATASET_DIR") or Path.home() / ".dsrl" / "datasets")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _reason(err: Exception) -> str:
    """A short reason for a failed download."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _download(url: str, path: Path, timeout_s: float) -> str:
    """Stream ``url`` to a temp file beside ``path``, rename it onto ``path`` once complete and an
    HDF5 file, and return its SHA-256."""
    digest = hashlib.sha256()

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as f:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=path.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
        if not h5py.is_hdf5(tmp):
            raise DatasetError("the response is not an HDF5 file")

    atomic_write(path, write)
    return digest.hexdigest()


def _hf_download(repo: str, name: str, directory: Path, timeout_s: float) -> tuple[str, str]:
    """``name`` from the Hugging Face dataset ``repo`` into ``directory``; returns its SHA-256
    and source. The metadata request fails fast when offline (the download itself retries);
    the file is checked against the SHA-256 the hub records for it (an LFS file's ETag)."""
    endpoint = os.environ.get("HF_ENDPOINT")  # read now, not at huggingface_hub's import
    url = hf_hub_url(repo, name, repo_type="dataset", endpoint=endpoint)
    metadata = get_hf_file_metadata(url, timeout=timeout_s)
    path = Path(
        hf_hub_download(
            repo,
            name,
            repo_type="dataset",
            revision=metadata.commit_hash,
            local_dir=directory,
            endpoint=endpoint,
            etag_timeout=timeout_s,
        )
    )
    digest = sha256_file(path)
    recorded = (metadata.etag or "").strip('"')
    reason = None
    if re.fullmatch("[0-9a-f]{64}", recorded) and digest != recorded:
        reason = f"its SHA-256 is not the {recorded[:12]}... the hub records"
    elif not h5py.is_hdf5(path):
        reason = "the response is not an HDF5 file"
    if reason is not None:
        path.unlink()
        raise DatasetError(reason)
    return digest, f"hf://datasets/{repo}@{metadata.commit_hash}/{name}"


def fetch_dsrl_dataset(
    task: str,
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS,
    timeout_s: float = 30.0,
    hf_repo: str | None = DEFAULT_HF_REPO,
) -> DatasetIdentity:
    """The DSRL file for ``task`` in the DSRL directory, downloaded first if it is not there:
    from the Hugging Face dataset ``hf_repo`` (None: skipped), else from ``mirrors``, URL format
    strings with a ``{file}`` field, tried in order.

    A downloaded file gets a sidecar ``<file>.sha256.json`` ({sha256, source}); a later call checks
    the file against it.
    """
    name = dsrl_file_name(task)
    directory = dsrl_dataset_dir()
    path = directory / name
    with locked(path):  # parallel jobs download the file once
        if path.is_file():
            digest = sha256_file(path)
            sidecar = _sidecar(path)
            if sidecar.is_file() and json.loads(sidecar.read_text())["sha256"] != digest:
                raise DatasetError(
                    f"{path} changed since download (its SHA-256 differs from {sidecar.name}); "
                    f"delete it to re-download it, {COLLECT_HINT}"
                )
            return DatasetIdentity(path=str(path), sha256=digest, source="dsrl:local")

        failures = []
        if hf_repo is not None:
            try:
                digest, source = _hf_download(hf_repo, name, directory, timeout_s)
            except Exception as err:  # noqa: BLE001  (network, HTTP, offline mode: try the mirrors)
                failures.append(f"hf://datasets/{hf_repo}: {_reason(err)}")
            else:
                atomic_write_json(_sidecar(path), {"sha256": digest, "source": source})
                return DatasetIdentity(path=str(path), sha256=digest, source=f"dsrl:{source}")
        for mirror in mirrors:
            url = mirror.format(file=name)
            try:
                digest = _download(url, path, timeout_s)
            except (OSError, ValueError, http.client.HTTPException, DatasetError) as err:
                failures.append(f"{url}: {_reason(err)}")
                continue
            atomic_write_json(_sidecar(path), {"sha256": digest, "source": url})
            return DatasetIdentity(path=str(path), sha256=digest, source=f"dsrl:{url}")
        raise DatasetUnavailableError(
            f"DSRL dataset {name} for {task} is not in {directory} and no source served it "
            f"({'; '.join(failures) or 'no sources given'}); put the file in {directory} "
            f"(set DSRL_DATASET_DIR to use another directory), {COLLECT_HINT}"
        )


@functools.cache
def _space_shapes(task: TaskSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(observation shape, action shape) of the task's env (an env costs ~0.1 s to build)."""
    env = make_env(task)
    shapes = env.observation_space.shape, env.action_space.shape
    env.close()
    return shapes


def validate_dataset(path: str | os.PathLike, task: TaskSpec | str) -> None:
    """Raise DatasetError, naming the file and the fix, unless ``path`` is a usable DSRL file for
    ``task``: HDF5, every DSRL key, shapes of the task, one length, finite values, actions in
    [-1, 1], not empty."""
    path, spec = Path(path), as_task(task)
    name = spec.name
    obs_shape, act_shape = _space_shapes(spec)
    fix = f"replace it with a good copy (a DSRL download: delete it and run again), {COLLECT_HINT}"
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, not a dataset file; pass its HDF5 file")
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist; check the path, {COLLECT_HINT}")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path} is not an HDF5 file; {fix}")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in DSRL_KEYS if not isinstance(f.get(key), h5py.Dataset)]
            if missing:
                raise DatasetError(f"{path} lacks the DSRL keys {', '.join(missing)}; {fix}")
            shapes = {key: f[key].shape for key in DSRL_KEYS}
            lengths = {key: shape[0] if shape else 0 for key, shape in shapes.items()}
            if len(set(lengths.values())) != 1:
                raise DatasetError(f"{path} has keys of different lengths {lengths}; {fix}")
            n = lengths["observations"]
            if n == 0:
                raise DatasetError(f"{path} holds zero transitions; {fix}")
            expected = {
                "observations": [(n, *obs_shape)],
                "next_observations": [(n, *obs_shape)],
                "actions": [(n, *act_shape)],
                **{key: [(n,), (n, 1)] for key in ("rewards", "costs", "terminals", "timeouts")},
            }
            for key, allowed in expected.items():
                if shapes[key] not in allowed:
                    raise DatasetError(
                        f"{path}: {key} has shape {shapes[key]}, but {name} needs {allowed[0]}; "
                        f"the file is for another task or corrupt: {fix}"
                    )
            for key in DSRL_KEYS:
                values = f[key][:]
                if values.dtype.kind == "f" and not np.isfinite(values).all():
                    raise DatasetError(f"{path}: {key} holds NaN or Inf values; {fix}")
            largest = float(np.abs(f["actions"][:]).max())
            if largest > 1.0 + 1e-6:
                raise DatasetError(
                    f"{path}: actions reach {largest:.3g}, outside the action space [-1, 1] of "
                    f"{name}'s policies; rescale them to [-1, 1]"
                )
    except OSError as err:
        raise DatasetError(f"{path} is a truncated or corrupt HDF5 file ({err}); {fix}") from err


def load_dsrl_dataset(path: str | os.PathLike, task: TaskSpec | str) -> dict[str, np.ndarray]:
    """Validate ``path``, then load it through dsrl's own ``get_dataset``.

    dsrl's loader is ``OfflineEnv.get_dataset``, reached through dsrl's ``OfflineEnvWrapper``
    around the task's env, so one path serves both families (dsrl's ``Offline*`` velocity envs
    live in its ``offline_safety_gymnasium`` module, which cannot import without
    ``safety-gymnasium``).
    Returns the DSRL keys as float32 arrays; terminals and timeouts as 0/1 of shape (N,).
    """
    validate_dataset(path, task)
    env = OfflineEnvWrapper(make_env(task))
    try:
        data = env.get_dataset(h5path=str(path))
    finally:
        env.close()
    data = {key: data[key] for key in DSRL_KEYS}
    for key in ("terminals", "timeouts"):
        data[key] = (data[key].reshape(-1) == 1).astype(np.float32)
    return data
