"""Numerical faults, unsafe or mismatched checkpoints, secrets and unwritable dirs each
end with one clear line and leave what was saved intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from marvel import pipeline
from marvel.checkpoint import load_checkpoint, save_checkpoint
from marvel.checkpoint_records import FORMAT, PretrainedEntry
from marvel.errors import CheckpointError, NumericalFault
from marvel.fsutil import locked, own_dir, release_dir, sha256_file
from marvel.online import OnlineLearner
from tests.helpers import (
    ROOT,
    assert_clean_error,
    compose_config,
    read_metrics,
    read_summary,
    run_cli,
)

SMOKE = ("budget=smoke", "logger=none")


def tensor_entry(tensor: torch.Tensor) -> PretrainedEntry:
    """A checkpoint record holding ``tensor``, for tests of the file layer."""
    return PretrainedEntry({"name": "BallCircle"}, [1, 1], {}, {"x": tensor})


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN injected into iteration 3's losses: the run stops there, summary.json records the
    fault, and the checkpoint and metrics end at iteration 2."""
    real_step = OnlineLearner.iteration_step

    def faulty_step(self: OnlineLearner) -> dict[str, float]:
        row = real_step(self)
        if self.iteration == 3:
            row["loss/critic_cost"] = float("nan")
        return row

    monkeypatch.setattr(OnlineLearner, "iteration_step", faulty_step)
    cfg = compose_config(
        "experiment=from_scratch",
        *SMOKE,
        "budget.online_iterations=5",
        "budget.checkpoint_every=1",
    )
    with pytest.raises(
        NumericalFault, match=r"non-finite loss/critic_cost in finetuning at step 15"
    ):
        pipeline.run(cfg, tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed"
    assert summary["fault"] == {"stage": "finetuning", "step": 15, "keys": ["loss/critic_cost"]}
    assert load_checkpoint(tmp_path).iteration == 2
    assert [row["online/update"] for row in read_metrics(tmp_path)] == [0, 5, 10]


def test_divergence_ends_with_one_line(tmp_path: Path) -> None:
    """A real blow-up (rewards scaled to 1e38 overflow the critic's loss), from the command line."""
    proc = run_cli(
        "experiment=from_scratch",
        *SMOKE,
        "finetune.reward_scale=1e38",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert_clean_error(proc, "non-finite loss/critic_reward in finetuning at step 5")
    assert read_summary(tmp_path)["status"] == "failed"


class RunsCode:
    """Unpickling this runs code (it creates a file): weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    marker, checkpoint = tmp_path / "code-ran", tmp_path / "shared.pt"
    torch.save(
        {"format": FORMAT, "kind": "sac_lag", "task": "BallCircle", "x": RunsCode(marker)},
        checkpoint,
    )
    proc = run_cli(
        "stage=evaluate",
        f"checkpoint={checkpoint}",
        *SMOKE,
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert_clean_error(proc, "not a loadable marvel checkpoint")
    assert not marker.exists()


def test_checkpoint_of_another_format_names_both_formats(tmp_path: Path) -> None:
    checkpoint = tmp_path / "old.pt"
    torch.save({"format": "marvel-checkpoint/0", "kind": "sac_lag"}, checkpoint)
    with pytest.raises(CheckpointError, match="another version of marvel") as refused:
        load_checkpoint(checkpoint)
    assert "marvel-checkpoint/0" in str(refused.value) and FORMAT in str(refused.value)
    torch.save({"format": "something-else/1"}, checkpoint)
    with pytest.raises(CheckpointError, match="not a marvel checkpoint"):
        load_checkpoint(checkpoint)


def test_a_secret_in_the_environment_reaches_no_output(tmp_path: Path) -> None:
    """W&B's key (and any other secret in the environment) is in no file the run writes,
    W&B's own offline run included."""
    secret = "0123456789abcdef-not-a-real-key"
    env = {**os.environ, "WANDB_API_KEY": secret, "MARVEL_TOKEN": secret}
    run_dir = tmp_path / "run"
    command = ["experiment=from_scratch", "budget=smoke", f"hydra.run.dir={run_dir}"]
    subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *command],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # W&B (offline) wrote its run too
    assert not [p for p in files if secret.encode() in p.read_bytes()]


OFFLINE_ONLY = (
    "experiment=offline_only",  # collection and pretraining: the entries, and nothing after
    "env=BallCircle",
    "budget=smoke",
    "logger=none",
)


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with one collected dataset and one pretrained model (smoke budget)."""
    root = tmp_path_factory.mktemp("smoke_cache")
    run_cli(*OFFLINE_ONLY, f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={root / 'run'}")
    return root / "cache"


def run_on_copy(smoke_cache: Path, tmp_path: Path, edit) -> subprocess.CompletedProcess:
    """The offline_only command on a copy of ``smoke_cache`` after ``edit(dataset, model)``."""
    cache = Path(shutil.copytree(smoke_cache, tmp_path / "cache"))
    (dataset,) = (cache / "datasets").glob("*.hdf5")
    (model,) = (cache / "pretrained").glob("*.pt")
    edit(dataset, model)
    return run_cli(
        *OFFLINE_ONLY, f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}", check=False
    )


def test_pretrained_entry_of_another_task_is_refused(smoke_cache: Path, tmp_path: Path) -> None:
    """A cache entry whose recorded task differs (a file copied over another, with its record)
    is not used."""

    def retarget(dataset: Path, model: Path) -> None:
        state = torch.load(model, weights_only=True)
        state["spec"]["task"] = "CarRun"
        torch.save(state, model)
        model.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(model)}))

    proc = run_on_copy(smoke_cache, tmp_path, retarget)
    assert_clean_error(proc, "is not the pretrained model this run needs (its task differ)")


def garbage_weights(dataset: Path, model: Path) -> None:
    """Finite garbage in every tensor of the model; the file stays a valid checkpoint."""
    state = torch.load(model, weights_only=True)
    for net in ("actor", "reward_critic", "cost_critic"):
        for tensor in state["pretrained"][net].values():
            tensor.uniform_(-3.0, 3.0)
    torch.save(state, model)


def unlink_record(path: Path) -> None:
    path.with_suffix(".json").unlink()


def truncate_record(path: Path) -> None:
    record = path.with_suffix(".json")
    record.write_text(record.read_text()[:20])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (garbage_weights, "changed since it was pretrained"),
        (lambda dataset, model: unlink_record(model), "has no record of its content"),
        (lambda dataset, model: truncate_record(model), "has an unreadable record"),
        (lambda dataset, model: unlink_record(dataset), "has no record of its content"),
        (lambda dataset, model: truncate_record(dataset), "has an unreadable record"),
    ],
    ids=["model-garbage", "model-record-missing", "model-record-truncated",
         "dataset-record-missing", "dataset-record-truncated"],
)  # fmt: skip
def test_every_cache_entry_is_checked_before_use(
    smoke_cache: Path, tmp_path: Path, edit, message: str
) -> None:
    proc = run_on_copy(smoke_cache, tmp_path, edit)
    assert_clean_error(proc, message, "delete it to")


@pytest.mark.parametrize("where", ["under-a-file", "name-too-long"])
def test_unwritable_output_dir_ends_with_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("")
    run_dir = tmp_path / "a-file" / "run" if where == "under-a-file" else tmp_path / ("x" * 300)
    proc = run_cli(*SMOKE, f"hydra.run.dir={run_dir}", check=False)
    assert_clean_error(proc, "cannot write to the output dir", "hydra.run.dir=<a writable dir>")


def test_leftovers_of_a_killed_write_are_removed_under_the_lock(tmp_path: Path) -> None:
    """A SIGKILL mid-``atomic_write`` leaves a hidden temp file; the next holder of the entry's
    lock removes it (and those of the entry's sidecars), leaving other entries alone."""
    leftovers = [tmp_path / ".entry.hdf5.a1.tmp", tmp_path / ".entry.json.b2.tmp"]
    other = tmp_path / ".entry2.hdf5.c3.tmp"
    for path in [*leftovers, other]:
        path.write_bytes(b"half")
    with locked(tmp_path / "entry.hdf5"):
        pass
    assert not any(path.exists() for path in leftovers) and other.exists()


def hold_dir(path: Path) -> subprocess.Popen:
    """Another live process that owns ``path`` (as a running marvel run does)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "owned"
    return holder


OWNER_SCRIPT = (
    "import sys; from marvel.fsutil import own_dir; own_dir(sys.argv[1], 'x'); "
    "print('owned', flush=True); sys.stdin.read()"
)


@pytest.mark.parametrize("sweep", [False, True])
def test_a_run_or_sweep_dir_has_one_owner(tmp_path: Path, sweep: bool) -> None:
    """A second process on a dir that a live one owns is refused in one line naming the owner,
    whatever its config, before it writes anything; once the owner dies (SIGKILL: no cleanup),
    the same command runs."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    holder = hold_dir(out)
    setting = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    command = (
        *(("-m", "seed=1,2") if sweep else ("seed=1",)),
        "stage=collect",
        *SMOKE,
        f"paths.cache_dir={cache}",
        f"{setting}={out}",
    )
    try:
        proc = run_cli(*command, check=False)
        assert_clean_error(proc, f"is in use by pid {holder.pid} on ", f"{setting}=<another dir>")
        assert [p.name for p in out.iterdir()] == [".owner"]
    finally:
        holder.kill()
        holder.wait()
    run_cli(*command)
    summaries = [read_summary(p.parent) for p in out.rglob("summary.json")]
    assert sorted(s["seed"] for s in summaries) == ([1, 2] if sweep else [1])


def test_owning_a_dir_twice_in_one_process_is_a_no_op(tmp_path: Path) -> None:
    own_dir(tmp_path, "hydra.run.dir")
    own_dir(tmp_path, "hydra.run.dir")
    holder_line = (tmp_path / ".owner").read_text()
    assert holder_line.startswith(f"pid {os.getpid()} on ")
    release_dir(tmp_path)
    holder = hold_dir(tmp_path)  # another process may own it now
    holder.kill()
    holder.wait()


def test_a_full_disk_during_a_checkpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's error on a full disk becomes one line saying how to go on; no partial file."""

    def disk_full(obj, path) -> None:
        Path(path).write_bytes(b"half")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nmore"
        )

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as raised:
        save_checkpoint(tmp_path / "last.pt", tensor_entry(torch.zeros(1)))
    message = str(raised.value)
    assert "\n" not in message and "free space" in message and "rerun the same command" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "resume=never"),  # a truncated checkpoint
        (b"not a checkpoint", "resume=never"),
    ],
)
def test_an_unloadable_checkpoint_names_the_way_out(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, tensor_entry(torch.zeros(1000)))
    path.write_bytes(path.read_bytes()[:200] if content is None else content)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert fragment in str(raised.value) and "weights_only" not in str(raised.value)


def test_a_pickled_object_gets_no_advice_to_run_its_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": Path("p")}, path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert "weights_only" not in str(raised.value)
    assert "marvel loads no code from checkpoints" in str(raised.value)


def test_pretrained_entry_with_non_finite_weights_is_refused(
    smoke_cache: Path, tmp_path: Path
) -> None:
    def nan_weights(dataset: Path, model: Path) -> None:
        state = torch.load(model, weights_only=True)
        next(iter(state["pretrained"]["cost_critic"].values())).fill_(float("nan"))
        torch.save(state, model)
        record = json.loads(model.with_suffix(".json").read_text())
        model.with_suffix(".json").write_text(json.dumps({**record, "sha256": sha256_file(model)}))

    proc = run_on_copy(smoke_cache, tmp_path, nan_weights)
    assert_clean_error(proc, "holds non-finite weights (Q_c)", "delete it to pretrain again")


def test_evaluate_on_another_env_than_the_checkpoints_is_refused(
    smoke_cache: Path, tmp_path: Path
) -> None:
    """stage=evaluate runs the checkpoint's task; an env= that names another is refused."""
    (model,) = (smoke_cache / "pretrained").glob("*.pt")
    run_dir = tmp_path / "run"
    command = ("stage=evaluate", f"checkpoint={model}", *SMOKE, f"hydra.run.dir={run_dir}")
    proc = run_cli(*command, "env=CarRun", check=False)
    assert_clean_error(proc, "was trained on BallCircle, not env=CarRun", "env=BallCircle")
    assert not run_dir.exists()
    run_cli(*command)  # no env=: the checkpoint's own task
