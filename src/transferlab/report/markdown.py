"""results.md: per model and data set, a table of strategies by size with the verdict of each size;
then every group, each counted run's confusion-matrix picture with the per-class recall of each
size's best strategy (where the records hold matrices), the duplicates that were not counted, and
the jobs that did not complete."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from transferlab.config.tuning import TUNING_MARKDOWN
from transferlab.record import COMPLETED
from transferlab.report.collect import CONFUSION, CONFUSION_PNG, RELIABILITY_PNG
from transferlab.report.columns import is_missing, numeric, text
from transferlab.report.experiments import DUPLICATE, GROUP_KEYS, example_noun, size_phrase
from transferlab.report.links import linkable, run_name
from transferlab.report.stats import CONFIDENCE
from transferlab.report.summarize import code_counts, runs_phrase
from transferlab.utils.confusion import per_class_recall

# Beyond this many classes a recall line names only the weakest ones.
RECALL_CLASSES_SHOWN = 20


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _count(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _code_line(codes: Iterable[str]) -> str:
    counts = code_counts(codes)
    if len(counts) == 1:
        return f"Code: `{counts[0][0]}` ({'the' if counts[0][1] == 1 else 'all'} {runs_phrase(counts[0][1])})."
    return "Code: " + ", ".join(f"`{code}` ({runs_phrase(n)})" for code, n in counts) + "."


# Beside a group whose runs did not all run in the environment most runs share.
OTHER_ENV = "†"


def _env_line(envs: Iterable[str]) -> str:
    counts = code_counts(envs)
    if len(counts) == 1:
        return f"Environment: lock `{counts[0][0]}` ({'the' if counts[0][1] == 1 else 'all'} {runs_phrase(counts[0][1])})."
    return ("Environments differ: " + ", ".join(f"`{env}` ({runs_phrase(n)})" for env, n in counts)
            + f"; {OTHER_ENV} marks a group with runs outside `{counts[0][0]}`.")


def _strategy_table(g: pd.DataFrame, noun: str) -> list[str]:
    strategies = sorted(g["strategy"].unique())
    rows = []
    for size, gs in g.groupby("size", sort=False):
        by_strategy = {r.strategy: r for r in gs.itertuples()}
        row = [size]
        for s in strategies:
            r = by_strategy.get(s)
            row.append("–" if r is None else _bold(f"{_pm(r.test_mean, r.test_std)} (n={r.n})", r.best))
        rows.append(row)
    return _table([f"{noun}/class", *strategies], rows)


def _verdicts(comparisons: pd.DataFrame, noun: str) -> list[str]:
    if comparisons.empty:
        return []
    lines = ["Which strategy wins:", ""]
    lines += [f"- {size_phrase(c.size, noun)}: {c.verdict}." for c in comparisons.itertuples()]
    return lines + [""]


def _all_groups(groups: pd.DataFrame, unit: str, noun: str) -> list[str]:
    header = ["model", "data", f"{noun}/class", "strategy", "seeds", f"test acc{unit}", f"val acc{unit}",
              "test ECE", "test NLL", "labels", "unlabeled", "trainable params", "total params", "time (s)", "code"]
    rows = [
        [r.model, r.data, r.size, _bold(r.strategy, r.best) + (OTHER_ENV if r.other_env else ""), r.seeds or "–",
         _bold(_pm(r.test_mean, r.test_std), r.best), _pm(r.val_mean, r.val_std),
         _pm(r.ece_mean, r.ece_std, 3), _pm(r.nll_mean, r.nll_std, 3),
         _count(r.labels), _count(r.unlabeled), _count(r.trainable), _count(r.total), _pm(r.time_mean, r.time_std, 1), r.code]
        for r in groups.itertuples()
    ]
    return _table(header, rows)


def picture_cell(path: Any, out_dir: str | Path | None) -> str:
    """A link to a run's picture (`path` relative to the report), or where no reader of the report
    could follow it (a committed report, the run under the ignored logs/), the run's name."""
    if is_missing(path) or not path:
        return "not drawn"
    if out_dir is not None and not linkable(Path(out_dir) / str(path), out_dir):
        return f"`{_cell(run_name(str(path)))}`"
    return f"[{_cell(str(path).rsplit('/', 1)[-1])}]({quote(str(path))})"


def _with_confusion(jobs: pd.DataFrame) -> pd.DataFrame:
    """The counted runs whose records hold a confusion matrix, labelled like the groups."""
    if CONFUSION not in jobs.columns:
        return jobs.iloc[0:0]
    done = jobs[(jobs["status"] == COMPLETED) & jobs[CONFUSION].map(lambda c: isinstance(c, dict))]
    return done.assign(**{k: done[k].map(text) for k in GROUP_KEYS}, seed=done["seed"].map(text),
                       _test_acc=numeric(done, "test.acc"), _test_ece=numeric(done, "test.ece"))


def _counts(confusion: dict) -> tuple[list[str], np.ndarray] | None:
    """A record's class names and counts, or None where they do not make a square of that size (a
    hand-edited or foreign file must not stop the report)."""
    classes = [str(c) for c in confusion.get("classes") or []]
    try:
        counts = np.asarray(confusion.get("matrix"), dtype=np.int64)
    except (TypeError, ValueError):
        return None
    return (classes, counts) if classes and counts.shape == (len(classes), len(classes)) else None


def pooled_recall(confusions: Iterable[dict]) -> tuple[list[str], list[float | None], int] | None:
    """Per-class recall from the counts of several runs summed (runs over other classes left out),
    and how many runs were summed."""
    readable = [c for c in map(_counts, confusions) if c is not None]
    if not readable:
        return None
    classes = readable[0][0]
    same = [counts for names, counts in readable if names == classes]
    return classes, per_class_recall(sum(same)), len(same)


def recall_line(label: str, pooled: tuple[list[str], list[float | None], int]) -> str:
    classes, recall, n = pooled
    known = sorted(((r, c) for c, r in zip(classes, recall) if r is not None), key=lambda rc: rc[0])
    shown = known if len(known) <= RECALL_CLASSES_SHOWN else known[: RECALL_CLASSES_SHOWN // 2]
    parts = ", ".join(f"{_cell(c)} {100 * r:.1f}" for r, c in shown)
    rest = f", … ({len(known) - len(shown)} more classes, all higher)" if len(shown) < len(known) else ""
    return f"- {label} ({runs_phrase(n)}): {parts}{rest}"


def _run_rows(runs: pd.DataFrame, g: pd.DataFrame, scale: float, out_dir: str | Path | None) -> list[list[Any]]:
    """One row per run, in the order of the groups' table, seeds in numeric order."""
    rows = []
    for r in g.itertuples():
        of_group = runs[(runs["size"] == r.size) & (runs["strategy"] == r.strategy)]
        for job in sorted(of_group.to_dict("records"), key=lambda j: (len(j["seed"]), j["seed"])):
            rows.append([r.size, r.strategy, job["seed"], _pm(job["_test_acc"] * scale, None), _pm(job["_test_ece"], None, 3),
                         picture_cell(job.get(CONFUSION_PNG), out_dir), picture_cell(job.get(RELIABILITY_PNG), out_dir)])
    return rows


def _best_recalls(runs: pd.DataFrame, g: pd.DataFrame, noun: str) -> list[str]:
    """Per size, the per-class recall of the strategy with the highest test mean."""
    lines = []
    for size, gs in g.groupby("size", sort=False):
        if not gs["test_mean"].notna().any():
            continue
        best = gs.loc[gs["test_mean"].idxmax(), "strategy"]
        pooled = pooled_recall(runs[(runs["size"] == size) & (runs["strategy"] == best)][CONFUSION])
        if pooled is not None:
            lines.append(recall_line(f"{size_phrase(size, noun)}, {best}", pooled))
    return lines


def _confusions(jobs: pd.DataFrame, groups: pd.DataFrame, scale: float, noun: str, out_dir: str | Path | None) -> list[str]:
    """Per model and data set, each counted run's picture, then the best strategy's per-class recall."""
    runs = _with_confusion(jobs)
    if runs.empty:
        return []
    unit = " (%)" if scale == 100.0 else ""
    lines = ["## Confusion matrices and reliability diagrams", "",
             "Test split, rows the true class; each picture lies beside its run's metrics.json. A reliability "
             "diagram plots accuracy against confidence in 15 bins: bars under the diagonal are overconfidence.", ""]
    for (model, data), g in groups.groupby(["model", "data"], sort=False):
        here = runs[(runs["model"] == model) & (runs["data"] == data)]
        if here.empty:
            continue
        lines += [f"### {model} on {data}", ""]
        header = [f"{noun}/class", "strategy", "seed", f"test acc{unit}", "test ECE", "confusion matrix", "reliability"]
        lines += _table(header, _run_rows(here, g, scale, out_dir)) + [""]
        recalls = _best_recalls(here, g, noun)
        if recalls:
            lines += ["Per-class recall (%) of the strategy with the highest test mean, lowest first "
                      "(its runs' test counts summed):", "", *recalls, ""]
    return lines


def _duplicates(jobs: pd.DataFrame) -> list[str]:
    dup = jobs[jobs["status"] == DUPLICATE]
    lines = [f"## Duplicates, not counted ({len(dup)})", ""]
    if dup.empty:
        return lines + ["None.", ""]
    lines += ["Each seed counts once per group: the newest run with it (by run directory time). "
              "These repeat one that counts.", ""]
    for r in dup.itertuples():
        what = f"{r.model} · {r.data} · {r.size} · {r.strategy}, seed {r.seed}"
        lines.append(f"- `{r.job_dir}` ({_cell(what)}): repeats `{r.duplicate_of}`")
    return lines + [""]


def _failures(jobs: pd.DataFrame) -> list[str]:
    bad = jobs[~jobs["status"].isin([COMPLETED, DUPLICATE])]
    lines = [f"## Failed or unfinished jobs ({len(bad)})", ""]
    if bad.empty:
        lines.append("None.")
    for r in bad.itertuples():
        overrides = "" if is_missing(r.overrides) or not r.overrides else f" (`{r.overrides}`)"
        error = "no error recorded" if is_missing(r.error) else str(r.error)
        lines.append(f"- **{r.status}** `{r.job_dir}`{overrides}: {_cell(error)}")
    return lines + [""]


def _tuning_links(sources: Sequence[str], out_dir: str | Path | None) -> list[str]:
    """A link to each tuned comparison's own summary (the sweeper writes it into its sweep dir)."""
    if out_dir is None:
        return []
    found = [Path(src) / TUNING_MARKDOWN for src in sources if (Path(out_dir) / src / TUNING_MARKDOWN).is_file()]
    return [f"Tuned comparison: [{p.as_posix()}]({p.as_posix()}): per strategy the default and the tuned result side by "
            "side, the settings each search chose, and the verdicts on both arms." for p in found] + ([""] if found else [])


def render_markdown(jobs: pd.DataFrame, runs: pd.DataFrame, groups: pd.DataFrame, comparisons: pd.DataFrame,
                    scale: float, sources: Sequence[str], out_dir: str | Path | None = None) -> str:
    """`jobs` with the paths as they should appear (portable.py), relative to `out_dir`, where the
    report is written (None: links are written without checking that they resolve); `sources`: the
    dirs reported on."""
    unit = " (%)" if scale == 100.0 else ""
    counts = jobs["status"].value_counts().to_dict() if len(jobs) else {}
    ci = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = ["# Results", "", "Sources: " + ", ".join(f"`{d}`" for d in sources), ""]
    lines += _tuning_links(sources, out_dir)
    lines += [
        f"{len(jobs)} jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        + ". Values are mean ± std (sample std, ddof=1) over seeds, each seed counted once; "
        "the best strategy per model, data set and size is in **bold**. Its verdict compares it with the "
        "runner-up by the per-seed differences over the seeds both ran: their mean and a "
        f"{ci} confidence interval from the t distribution; a win is beyond noise when the interval excludes 0.",
        "",
    ]
    if groups.empty:
        lines += ["No completed runs yet.", ""]
    else:
        lines += [f"## Test accuracy{unit} by strategy", ""]
        for (model, data), g in groups.groupby(["model", "data"], sort=False):
            here = runs[(runs["model"] == model) & (runs["data"] == data)]
            lines += [f"### {model} on {data}", "", _code_line(here["code"]), _env_line(here["env"]), ""]
            noun = example_noun(here)
            lines += _strategy_table(g, noun) + [""]
            lines += _verdicts(comparisons[(comparisons["model"] == model) & (comparisons["data"] == data)], noun)
        lines += ["## All groups", ""] + _all_groups(groups, unit, example_noun(runs)) + [""]
        lines += _confusions(jobs, groups, scale, example_noun(runs), out_dir)
    lines += _duplicates(jobs)
    lines += _failures(jobs)
    return "\n".join(lines)
