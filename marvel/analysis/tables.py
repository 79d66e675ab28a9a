"""The results table of ``python -m marvel.analysis`` in Markdown and LaTeX: final normalized
reward and cost per method and env (mean +- sample std), unsafe entries marked, the best safe
entry per env in bold; then the cumulative online cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marvel.analysis.runs import method_order


def _seeds_note(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    counts = {
        (env, method): entry["n_seeds"]
        for env, entries in table.items()
        for method, entry in entries.items()
    }
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{n} seed{'s' if n != 1 else ''} per entry"
    return "seeds per entry: " + ", ".join(
        f"{method} on {env}: {n}" for (env, method), n in counts.items()
    )


def _methods(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(set().union(*(set(entries) for entries in table.values())), key=method_order)


def _pm(mean: float, std: float | None, sep: str) -> str:
    """``mean ± std``; a single run's value says so instead of showing a zero spread."""
    return f"{mean:.2f} (n=1)" if std is None else f"{mean:.2f}{sep}{std:.2f}"


def markdown_tables(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The final-score table (unsafe: dagger after the cost; best safe entry: bold) and the
    cumulative-cost table, in Markdown."""
    envs, methods = list(table), _methods(table)
    lines = [
        "## Final normalized reward and cost",
        "",
        "| method | " + " | ".join(f"{env} reward | {env} cost" for env in envs) + " |",
        "|---|" + "---|---|" * len(envs),
    ]
    for method in methods:
        cells = []
        for env in envs:
            entry = table[env].get(method)
            if entry is None:
                cells += ["–", "–"]
                continue
            reward = _pm(entry["reward_mean"], entry["reward_std"], " ± ")
            cost = _pm(entry["cost_mean"], entry["cost_std"], " ± ")
            if entry["best"]:
                reward, cost = f"**{reward}**", f"**{cost}**"
            cells += [reward, cost if entry["safe"] else f"{cost} †"]
        lines.append(f"| {method.replace('|', '/')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean ± sample std over seeds ({_seeds_note(table)}). Bold: the best safe entry per "
        "env (highest normalized reward).",
        "",
        "† unsafe: normalized cost > 1",
        "",
        "## Cumulative online cost",
        "",
        "| method | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for method in methods:
        cells = [
            _pm(
                table[env][method]["cumulative_cost_mean"],
                table[env][method]["cumulative_cost_std"],
                " ± ",
            )
            if method in table[env]
            else "–"
            for env in envs
        ]
        lines.append(f"| {method.replace('|', '/')} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample std over seeds ({_seeds_note(table)})."]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def _tex_table(
    caption: str, envs: list[str], columns: list[str], rows: list[list[str]]
) -> list[str]:
    """A booktabs table: one column group per env, ``columns`` in each, then ``rows``."""
    width = len(columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        r"\begin{tabular}{l" + (" " + "c" * width) * len(envs) + "}",
        r"\toprule",
    ]
    if width > 1:
        lines.append(
            " & "
            + " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{_tex(env)}}}" for env in envs)
            + r" \\"
        )
        lines.append(
            " ".join(
                rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(envs))
            )
        )
        lines.append("Method & " + " & ".join(columns * len(envs)) + r" \\")
    else:
        lines.append("Method & " + " & ".join(_tex(env) for env in envs) + r" \\")
    lines += [r"\midrule", *(" & ".join(row) + r" \\" for row in rows)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return lines


def latex_tables(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The two tables of ``markdown_tables`` in LaTeX (booktabs; unsafe entries gray)."""
    envs, methods = list(table), _methods(table)
    note = _seeds_note(table)
    final_rows, cumulative_rows = [], []
    for method in methods:
        final_row, cumulative_row = [_tex(method)], [_tex(method)]
        for env in envs:
            entry = table[env].get(method)
            if entry is None:
                final_row += ["--", "--"]
                cumulative_row.append("--")
                continue
            cells = [
                _pm(entry["reward_mean"], entry["reward_std"], r" $\pm$ "),
                _pm(entry["cost_mean"], entry["cost_std"], r" $\pm$ "),
            ]
            if entry["best"]:
                cells = [rf"\textbf{{{cell}}}" for cell in cells]
            elif not entry["safe"]:
                cells = [rf"\textcolor{{gray}}{{{cell}}}" for cell in cells]
            final_row += cells
            cumulative_row.append(
                _pm(entry["cumulative_cost_mean"], entry["cumulative_cost_std"], r" $\pm$ ")
            )
        final_rows.append(final_row)
        cumulative_rows.append(cumulative_row)
    lines = [
        "% marvel.analysis tables: the preamble needs \\usepackage{booktabs}, \\usepackage{xcolor}",
        *_tex_table(
            rf"Final normalized reward and cost, mean $\pm$ sample std over seeds ({note}). "
            r"Gray: unsafe (normalized cost $> 1$). Bold: the best safe entry per task.",
            envs,
            ["reward", "cost"],
            final_rows,
        ),
        "",
        *_tex_table(
            rf"Cumulative online cost, mean $\pm$ sample std over seeds ({note}).",
            envs,
            ["cost"],
            cumulative_rows,
        ),
    ]
    return "\n".join(lines) + "\n"
