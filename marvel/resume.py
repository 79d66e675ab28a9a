"""Resume: a rerun in a run dir continues from its last checkpoint, and only with the config that
wrote it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from marvel.checkpoint import LAST, load_checkpoint
from marvel.checkpoint_records import FinetuningCheckpoint, PretrainingCheckpoint
from marvel.errors import MarvelError
from marvel.fsutil import json_digest

# Settings that do not change a run's numbers: a resumed run may differ in them.
RESUME_IGNORES = ("resume", "logger", "paths", "eval_envs", "sweep")
RESUMABLE_STAGES = ("pretrain", "finetune", "all")


def config_digest(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config without ``RESUME_IGNORES``: a run dir's checkpoint is
    resumed only by the config that wrote it."""
    container = OmegaConf.to_container(cfg, resolve=True)
    kept = {k: v for k, v in container.items() if k not in RESUME_IGNORES}
    return json_digest(kept)


RunCheckpoint = PretrainingCheckpoint | FinetuningCheckpoint


def resume_point(cfg: DictConfig, run_dir: Path) -> RunCheckpoint | None:
    """The checkpoint a rerun in ``run_dir`` continues from (``resume=auto`` and a pretraining
    or finetuning checkpoint there), or None to start over."""
    path = run_dir / "checkpoints" / LAST
    if cfg.resume == "never" or cfg.stage not in RESUMABLE_STAGES or not path.is_file():
        return None
    state = load_checkpoint(path, (PretrainingCheckpoint, FinetuningCheckpoint))
    if state.config_digest != config_digest(cfg):
        raise MarvelError(
            f"{run_dir} holds a run of another config (its checkpoint was written with other "
            "settings); rerun with that run's settings to resume it, with resume=never to start "
            "over in this dir (its metrics and checkpoint are replaced), or in another "
            "hydra.run.dir"
        )
    return state


def finished(cfg: DictConfig, resume: RunCheckpoint | None) -> bool:
    """Whether ``resume`` is a finetuning checkpoint at the end of ``cfg``'s budget."""
    return (
        isinstance(resume, FinetuningCheckpoint)
        and resume.iteration >= cfg.budget.online_iterations
    )


def resume_axis_step(checkpoint: RunCheckpoint) -> tuple[str, int]:
    """The x-axis and step a checkpoint was taken at (its metrics rows end there)."""
    if isinstance(checkpoint, PretrainingCheckpoint):
        return "offline/step", checkpoint.step
    return "online/update", checkpoint.updates
