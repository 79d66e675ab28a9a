"""DSRL dataset files: the writer's output loads through dsrl unchanged, bad files fail with a
clear DatasetError, and downloads (over loopback) land verified in the DSRL directory."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from marvel.data.dsrl_files import (
    DEFAULT_HF_REPO,
    dsrl_file_name,
    fetch_dsrl_dataset,
    load_dsrl_dataset,
    validate_dataset,
)
from marvel.data.hdf5_io import DSRL_KEYS, episode_returns, save_cr_plot, write_dsrl_hdf5
from marvel.envs import make_env, step_cost
from marvel.errors import DatasetError, DatasetUnavailableError
from marvel.fsutil import sha256_file

TASK = "BallCircle"
REFUSED = "http://127.0.0.1:9/{file}"  # the discard port: nothing listens, the connection fails


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Three 200-step BallCircle episodes from random actions in the real env."""
    env = make_env(TASK, seed=0)
    rows: dict[str, list] = {key: [] for key in DSRL_KEYS}
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            for key, value in zip(
                DSRL_KEYS,
                (obs, next_obs, action, reward, step_cost(info), terminated, truncated),
                strict=True,
            ):
                rows[key].append(value)
            obs = next_obs
    env.close()
    return {key: np.asarray(values, dtype=np.float32) for key, values in rows.items()}


@pytest.fixture(scope="module")
def good_file(data: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / dsrl_file_name(TASK)
    write_dsrl_hdf5(path, data)
    return path


def test_written_file_loads_through_dsrl_unchanged(
    data: dict[str, np.ndarray], good_file: Path
) -> None:
    assert data["observations"].shape == (600, 8) and data["actions"].shape == (600, 2)
    loaded = load_dsrl_dataset(good_file, TASK)
    assert set(loaded) == set(DSRL_KEYS)
    for key in DSRL_KEYS:
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], data[key])


def test_identical_data_gives_identical_bytes(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    write_dsrl_hdf5(tmp_path / "a.hdf5", data)
    write_dsrl_hdf5(tmp_path / "b.hdf5", data)
    assert (tmp_path / "a.hdf5").read_bytes() == (tmp_path / "b.hdf5").read_bytes()


def _drop_costs(data: dict[str, np.ndarray], path: Path) -> None:
    with h5py.File(path, "w") as f:
        for key in DSRL_KEYS:
            if key != "costs":
                f.create_dataset(key, data=data[key])


def _with(**changes: object):
    def make(data: dict[str, np.ndarray], path: Path) -> None:
        write_dsrl_hdf5(path, {**data, **{k: f(data[k]) for k, f in changes.items()}})

    return make


def _nan_reward(rewards: np.ndarray) -> np.ndarray:
    rewards = rewards.copy()
    rewards[7] = np.nan
    return rewards


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda data, path: None, "does not exist"),
        (lambda data, path: path.write_text("not a dataset\n"), "not an HDF5 file"),
        (_drop_costs, "lacks the DSRL keys costs"),
        (_with(observations=lambda o: o[:, :5], next_observations=lambda o: o[:, :5]), "(600, 8)"),
        (_with(rewards=_nan_reward), "rewards holds NaN or Inf"),
        (_with(**{k: (lambda a: a[:0]) for k in DSRL_KEYS}), "zero transitions"),
        (_with(actions=lambda a: 2.0 * a), "outside the action space [-1, 1]"),
        (lambda data, path: path.mkdir(), "is a directory, not a dataset file"),
    ],
    ids=["missing", "text", "missing-key", "obs-shape", "nan", "empty", "actions", "a-dir"],
)
def test_bad_file_raises_dataset_error(
    make, fragment: str, data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "bad.hdf5"
    make(data, path)
    with pytest.raises(DatasetError, match=r"bad\.hdf5") as raised:
        load_dsrl_dataset(path, TASK)
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


def test_truncated_file_raises_dataset_error(good_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "half.hdf5"
    content = good_file.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        validate_dataset(path, TASK)


def test_no_mirror_gives_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    with pytest.raises(DatasetUnavailableError) as raised:
        fetch_dsrl_dataset(TASK, mirrors=(REFUSED,), timeout_s=5.0)
    message = str(raised.value)
    for fragment in (dsrl_file_name(TASK), str(tmp_path), "127.0.0.1:9", "data=collect"):
        assert fragment in message
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]  # no file, not even a half one


@contextlib.contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on loopback with ``handler``, in a thread; yields its base URL."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()
        thread.join()


@pytest.fixture
def server(good_file: Path) -> Iterator[str]:
    """An HTTP server on loopback serving ``good_file``'s directory; yields its base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    with serving(functools.partial(QuietHandler, directory=str(good_file.parent))) as url:
        yield url


def test_download_verify_and_reuse(
    server: str, good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    name = dsrl_file_name(TASK)
    mirrors = (REFUSED, server + "/missing/{file}", server + "/{file}")
    identity = fetch_dsrl_dataset(TASK, mirrors=mirrors, timeout_s=5.0)

    path = tmp_path / name
    assert identity.path == str(path)
    assert identity.source == f"dsrl:{server}/{name}"
    assert path.read_bytes() == good_file.read_bytes()
    assert identity.sha256 == sha256_file(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", name, name + ".sha256.json"]

    again = fetch_dsrl_dataset(TASK, mirrors=(REFUSED,))
    assert again.source == "dsrl:local" and again.sha256 == identity.sha256

    with path.open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(DatasetError, match="changed since download"):
        fetch_dsrl_dataset(TASK, mirrors=(REFUSED,))


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(good_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A Hugging Face hub on loopback serving ``good_file`` at DSRL's dataset repo (the headers
    ``huggingface_hub`` reads: the commit, the LFS file's SHA-256 as ETag, the size), with
    offline mode off for this test. Yields its state: set ``etag`` to make the hub lie."""
    content = good_file.read_bytes()
    state = {"etag": sha256_file(good_file), "requests": []}
    route = re.compile(rf"/datasets/{DEFAULT_HF_REPO}/resolve/[^/]+/{good_file.name}$")

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> bool:
            state["requests"].append(f"{self.command} {self.path}")
            if not route.match(self.path):
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{state["etag"]}"')
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            return True

        def do_GET(self) -> None:
            if self.do_HEAD():
                self.wfile.write(content)

    with serving(Hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield state


def test_download_from_the_hugging_face_repo(
    hub: dict, good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    identity = fetch_dsrl_dataset(TASK, mirrors=(REFUSED,), timeout_s=5.0)
    name = dsrl_file_name(TASK)
    assert identity.path == str(tmp_path / name)
    assert identity.source == f"dsrl:hf://datasets/{DEFAULT_HF_REPO}@{COMMIT}/{name}"
    assert (tmp_path / name).read_bytes() == good_file.read_bytes()
    assert identity.sha256 == sha256_file(good_file)
    assert any(
        r.startswith(f"GET /datasets/{DEFAULT_HF_REPO}/resolve/{COMMIT}/") for r in hub["requests"]
    )
    again = fetch_dsrl_dataset(TASK, mirrors=(REFUSED,))  # on disk now: no request
    assert again.source == "dsrl:local" and again.sha256 == identity.sha256


def test_a_file_the_hub_does_not_vouch_for_is_refused(
    hub: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download whose SHA-256 is not the one the hub records is deleted; the mirrors are
    tried next, and the message names both failures."""
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    hub["etag"] = "f" * 64
    with pytest.raises(DatasetUnavailableError) as raised:
        fetch_dsrl_dataset(TASK, mirrors=(REFUSED,), timeout_s=5.0)
    message = str(raised.value)
    assert "is not the ffffffffffff... the hub records" in message and "127.0.0.1:9" in message
    assert not (tmp_path / dsrl_file_name(TASK)).exists()


def test_offline_mode_skips_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 (set for the whole suite): no request, the reason in the message."""
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match="offline mode is enabled"):
        fetch_dsrl_dataset(TASK, mirrors=(REFUSED,), timeout_s=5.0)


def test_episode_returns_drops_trailing_partial_episode() -> None:
    data = {
        "rewards": np.array([1, 2, 3, 4, 5, 6], dtype=np.float32),
        "costs": np.array([0, 1, 0, 1, 1, 1], dtype=np.float32),
        "terminals": np.array([0, 1, 0, 0, 0, 0], dtype=np.float32),
        "timeouts": np.array([0, 0, 0, 1, 0, 0], dtype=bool),
    }
    rewards, costs = episode_returns(data)
    np.testing.assert_array_equal(rewards, [3, 7])
    np.testing.assert_array_equal(costs, [1, 1])


def test_cr_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "cr.png"
    save_cr_plot(np.array([0.0, 10.0, 30.0]), np.array([100.0, 300.0, 500.0]), 20.0, path, "t")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000
    assert list(tmp_path.iterdir()) == [path]
