"""A W&B workspace for one sweep, as code: ``python -m marvel.analysis.dashboard --entity E
--project P --group G`` (``wandb login`` first).

The workspace shows the runs of W&B group ``G`` (a sweep launch: marvel groups a multirun's runs
as ``<sweep>:<date>/<time>``), grouped by experiment (mean and std over seeds), against
policy-gradient updates: normalized reward and cost with the cost limit marked, the Lagrange
multiplier and the controller's gains and terms, and the training returns and losses.
"""

from __future__ import annotations

import argparse
import sys

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

from marvel.analysis.command import run_command
from marvel.errors import AnalysisError

PROG = "marvel.analysis.dashboard"
X_AXIS = "online/update"  # the paper's x-axis: policy-gradient updates
GROUP_BY = "experiment"  # marvel's W&B config key of the method (also the runs' job_type)


def line(title: str, *metrics: str, dashed: tuple[str, ...] = (), **kwargs: object) -> wr.LinePlot:
    """Metrics against updates, runs grouped by experiment: mean line, std band."""
    return wr.LinePlot(
        title=title,
        x=X_AXIS,
        y=list(metrics),
        groupby=wr.Config(GROUP_BY),
        groupby_aggfunc="mean",
        groupby_rangefunc="stddev",
        line_marks={m: "dashed" for m in dashed} or None,
        **kwargs,
    )


def sections() -> list[ws.Section]:
    """The panels, in the order a safe-RL reader checks them."""
    evaluation = ws.Section(
        name="Evaluation (deterministic policy)",
        is_open=True,
        panels=[
            line("normalized reward", "eval/normalized_reward"),
            line("normalized cost (limit = 1)", "eval/normalized_cost", range_y=(0.0, None)),
            # eval/cost_limit is logged with every evaluation: the limit as a dashed line
            line(
                "episodic cost and its limit",
                "eval/cost",
                "eval/cost_limit",
                dashed=("eval/cost_limit",),
            ),
        ],
    )
    lagrange = ws.Section(
        name="Lagrange multiplier",
        is_open=True,
        panels=[
            line("lambda", "lagrange/lambda"),
            line("PID gains (aPID adapts them)", "lagrange/kp", "lagrange/ki", "lagrange/kd"),
            line("PID terms", "lagrange/p", "lagrange/i", "lagrange/d"),
        ],
    )
    training = ws.Section(
        name="Training",
        panels=[
            line("training episode reward", "train/episode_reward"),
            line("training episode cost", "train/episode_cost"),
            line("cumulative training cost", "train/cumulative_cost"),
            line("critic losses", "loss/critic_reward", "loss/critic_cost"),
            line("actor loss", "loss/actor"),
            line("policy entropy and temperature", "train/entropy", "train/alpha"),
        ],
    )
    return [evaluation, lagrange, training]


def build_workspace(entity: str, project: str, group: str, name: str | None = None) -> ws.Workspace:
    """The workspace for the runs of ``group`` (not saved: call ``.save()`` online)."""
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or f"marvel: {group}",
        sections=sections(),
        settings=ws.WorkspaceSettings(x_axis=X_AXIS),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == group], groupby=[ws.Config(GROUP_BY)]
        ),
    )


def save(workspace: ws.Workspace) -> str:
    """Save ``workspace`` to W&B; returns the line that says where it is."""
    try:
        workspace.save()
    except Exception as err:  # no login, no network, no such project: one line, no traceback
        raise AnalysisError(f"could not save the workspace ({err})") from err
    return f"workspace saved: {workspace.url}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__)
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="marvel", help="W&B project (default: marvel)")
    parser.add_argument("--group", required=True, help="W&B group of the runs (a sweep launch)")
    parser.add_argument("--name", help="workspace name (default: 'marvel: <group>')")
    args = parser.parse_args(argv)
    workspace = build_workspace(args.entity, args.project, args.group, args.name)
    return run_command(PROG, "the workspace", lambda: save(workspace))


if __name__ == "__main__":
    sys.exit(main())
