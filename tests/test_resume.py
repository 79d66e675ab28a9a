"""A run killed mid-finetuning and rerun with the same command resumes from its last
checkpoint and ends with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from marvel.checkpoint import rng_state, set_rng_state
from marvel.logging import keep_rows_until
from marvel.offline.bcql import BCQL, BCQLConfig
from marvel.offline.bearl import BEARL, BEARLConfig
from marvel.offline.cpq import CPQ, CPQConfig
from marvel.start import NetworkSizes
from tests.helpers import kill_when, read_metrics, read_summary, run_cli

# The whole Marvel pipeline at smoke budget, long enough to be killed between checkpoints.
RUN = (
    "env=BallCircle",
    "budget=smoke",
    "budget.online_iterations=16",
    "budget.checkpoint_every=2",
    "budget.eval_every=4",
)


def run_rows(run_dir: Path) -> list[dict]:
    """Metrics rows without timings and without pretraining rows (only the first run of a
    config pretrains; later ones take pi_0 from the cache)."""
    return [
        {k: v for k, v in row.items() if not k.startswith("perf/")}
        for row in read_metrics(run_dir)
        if "offline/step" not in row
    ]


def killed_mid_finetuning(run_dir: Path, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send the run ``sig`` once a checkpoint exists and the metrics have gone past it."""
    metrics, checkpoint = run_dir / "metrics.jsonl", run_dir / "checkpoints" / "last.pt"

    def past_a_checkpoint(_: str) -> bool:  # initial eval + 3 iterations: past iteration 2
        rows = metrics.read_text().count("\n") if metrics.is_file() else 0
        return checkpoint.is_file() and rows >= 4

    kill_when(RUN, run_dir, past_a_checkpoint, run_dir.parent / f"{run_dir.name}.out", sig=sig)
    assert not (run_dir / "summary.json").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_cli(*RUN, f"hydra.run.dir={run_dir}")
    return run_dir


def test_killed_run_resumes_to_the_same_numbers(uninterrupted: Path, tmp_path: Path) -> None:
    killed_mid_finetuning(tmp_path)
    proc = run_cli(*RUN, f"hydra.run.dir={tmp_path}")  # the same command again
    resumed, reference = read_summary(tmp_path), read_summary(uninterrupted)
    assert 2 <= resumed["resumed_from_iteration"] < 16
    # the progress bar continues from the checkpoint's iteration
    assert f"| {resumed['resumed_from_iteration']}/16 [" in proc.stderr
    assert reference["resumed_from_iteration"] is None
    for key in ("eval", "initial_eval", "online", "lagrange", "vpa", "dataset"):
        assert resumed[key] == reference[key], key
    # no duplicated or missing rows: the rows logged after the checkpoint were dropped
    assert run_rows(tmp_path) == run_rows(uninterrupted)
    # the resumed run logs into the same W&B run: two offline run dirs, one run id
    wandb_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2
    assert len({path.name.rsplit("-", 1)[1] for path in wandb_runs}) == 1


def test_ctrl_c_says_how_to_resume_in_one_line(uninterrupted: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed_mid_finetuning(run_dir, signal.SIGINT)
    output = (tmp_path / "run.out").read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "marvel: interrupted; rerun the same command to resume" in output
    run_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert 2 <= read_summary(run_dir)["resumed_from_iteration"] < 16
    assert run_rows(run_dir) == run_rows(uninterrupted)


def test_a_finished_run_is_left_as_it_is(uninterrupted: Path) -> None:
    """Rerunning a finished run's command says so and rewrites nothing (summary.json keeps
    its collection and pretraining timings)."""
    before = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
    proc = run_cli(*RUN, f"hydra.run.dir={uninterrupted}")
    assert f"{uninterrupted} holds this run, finished" in proc.stdout
    assert "[marvel] result: BallCircle marvel seed 0:" in proc.stdout
    after = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
    changed = {p.relative_to(uninterrupted) for p in after if before.get(p) != after[p]}
    # only Hydra's files (run.log gets this command's lines, .hydra/ its same config) and the
    # owner record (.owner: this command's pid)
    assert all(p in (Path("run.log"), Path(".owner")) or p.parts[0] == ".hydra" for p in changed)


def test_an_unreadable_summary_is_written_again(uninterrupted: Path, tmp_path: Path) -> None:
    """A finished run whose summary.json was truncated: the rerun writes it again from the
    checkpoint, with the same scores."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    (run_dir / "summary.json").write_text('{"status": "o')
    proc = run_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert "summary.json is unreadable: writing it again" in proc.stdout
    for key in ("eval", "initial_eval", "online", "lagrange"):
        assert read_summary(run_dir)[key] == read_summary(uninterrupted)[key], key


def test_resume_never_starts_over(uninterrupted: Path, tmp_path: Path) -> None:
    """A run dir holding a checkpoint (here: a copy of the finished run) with resume=never runs
    from the start, and its rows replace the old ones."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    run_cli(*RUN, f"hydra.run.dir={run_dir}", "resume=never")
    summary = read_summary(run_dir)
    assert summary["resumed_from_iteration"] is None
    assert summary["eval"] == read_summary(uninterrupted)["eval"]
    assert run_rows(run_dir) == run_rows(uninterrupted)


def test_another_config_does_not_resume(uninterrupted: Path) -> None:
    """A run dir's checkpoint is resumed only by the config that wrote it; the command is
    refused before Hydra writes anything, so every file there is left as it was, .hydra/
    included."""

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}

    before = files()
    proc = run_cli(*RUN, "seed=1", f"hydra.run.dir={uninterrupted}", check=False)
    assert proc.returncode == 2
    assert "holds a run of another config" in proc.stderr and "resume=never" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert files() == before


def test_keep_rows_until_drops_later_rows_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"offline/step": 100, "loss": 1.0}, {"online/update": 0}, {"online/update": 5}]
    later = {"online/update": 10}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, later]) + '{"online/upd')
    keep_rows_until(path, "online/update", 5)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


def test_keep_rows_until_drops_later_stages(tmp_path: Path) -> None:
    """Resumed inside pretraining: VPA and finetuning rows logged after it go too."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"offline/step": 100}, {"offline/step": 200}]
    later = [{"offline/step": 300}, {"vpa/iteration": 3}, {"online/update": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *later]))
    keep_rows_until(path, "offline/step", 200)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


@pytest.mark.parametrize(
    ("learner_cls", "cfg"),
    [
        (CPQ, CPQConfig(vae_hidden_sizes=[32, 32])),
        (BEARL, BEARLConfig(vae_hidden_sizes=[32, 32])),
        (BCQL, BCQLConfig(vae_hidden_sizes=[32, 32])),
    ],
    ids=["cpq", "bearl", "bcql"],
)
def test_offline_learner_resumes_from_its_state(learner_cls, cfg) -> None:
    """A pretraining checkpoint (learner state + RNG) continued in a fresh learner gives the
    same parameters as training on without a break: networks, optimizers, multipliers, PID
    state and counters all travel (marvel.offline.base.OfflineLearnerBase.state_dict)."""
    from tests.helpers import random_batch

    batch = random_batch(n=32, obs_dim=5, act_dim=2)
    sizes = NetworkSizes([32, 32], [32, 32], 2)

    def make():
        return learner_cls(5, 2, sizes, cfg, 20.0, 200, torch.device("cpu"))

    torch.manual_seed(0)
    straight = make()
    for _ in range(3):
        straight.update(batch)
    state, rng = straight.state_dict(), rng_state()
    state = torch.load(_through_bytes(state), weights_only=True)  # as the checkpoint stores it
    for _ in range(3):
        straight.update(batch)

    resumed = make()
    resumed.load_state_dict(state)
    set_rng_state(rng)
    for _ in range(3):
        resumed.update(batch)
    for name, value in straight.state_dict().items():
        ours, theirs = _leaves(resumed.state_dict()[name]), _leaves(value)
        assert len(ours) == len(theirs), name
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b, name


def _through_bytes(state):
    import io

    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    return stream


def _leaves(value):
    """The leaves of a (nested) state, in a fixed order, for an exact comparison."""
    if isinstance(value, dict):
        return [leaf for k in sorted(value, key=str) for leaf in _leaves(value[k])]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


# Long enough stages to be killed inside each: collection, pretraining, VPA.
STAGED = (
    "env=BallCircle",
    "budget=smoke",
    "budget.collect_episodes=30",
    "budget.offline_steps=300",
    "offline.log_every=50",
    "budget.vpa_iterations=1500",
    "budget.online_iterations=4",
    "logger=none",
)


def after(marker: str, seconds: float):
    """A kill condition: ``seconds`` after ``marker`` first appears in the output."""
    seen: list[float] = []

    def ready(text: str) -> bool:
        if marker in text and not seen:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= seconds

    return ready


@pytest.mark.slow
def test_killed_in_every_stage_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    """Killed during collection, then during pretraining, then during VPA, and run to the end:
    the same numbers and metrics rows as an uninterrupted run (each with its own empty cache)."""
    reference = tmp_path / "reference"
    run_cli(*STAGED, f"paths.cache_dir={tmp_path / 'cache-a'}", f"hydra.run.dir={reference}")

    command = (*STAGED, f"paths.cache_dir={tmp_path / 'cache-b'}")
    run_dir, out = tmp_path / "killed", tmp_path / "out.txt"
    datasets = tmp_path / "cache-b" / "datasets"
    kill_when(command, run_dir, after("collecting 30 episodes", 2.0), out)
    assert not list(datasets.glob("*.hdf5"))  # no half dataset that a rerun could take for whole
    checkpoint = run_dir / "checkpoints" / "last.pt"
    kill_when(
        command, run_dir, lambda text: "pretraining cpq" in text and checkpoint.is_file(), out
    )
    kill_when(command, run_dir, after("VPA: aligning", 2.0), out)
    assert "resuming pretraining at step" in out.read_text()
    run_cli(*command, f"hydra.run.dir={run_dir}")

    resumed, expected = read_summary(run_dir), read_summary(reference)
    for key in ("eval", "initial_eval", "online", "lagrange", "vpa"):
        assert resumed[key] == expected[key], key
    assert resumed["dataset"]["sha256"] == expected["dataset"]["sha256"]
    for summary in (resumed, expected):
        summary["pretrained"]["metrics"].pop("perf/offline_steps_per_s")
    assert resumed["pretrained"]["metrics"] == expected["pretrained"]["metrics"]

    def rows(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if "perf/" not in k} for r in read_metrics(path)]

    assert rows(run_dir) == rows(reference)
