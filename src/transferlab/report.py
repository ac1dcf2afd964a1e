"""Gather the ``metrics.json`` of every run under some directories into tables and plots.

``transferlab report <dir> [<dir> ...] [--out OUT]`` writes into OUT (default: the first dir):

- ``results.csv``: one row per job (completed, failed, or unfinished), flat columns;
- ``results.md``: mean ± std over seeds per (model, data, images per class, strategy), the best
  strategy per (model, data, size) in bold, and the failed or unfinished jobs;
- ``acc_vs_size.png``, ``acc_vs_time.png``, ``params_by_strategy.png``.

A sweep may still be running or have crashed: a Hydra job dir (one with ``.hydra/``) without a
``metrics.json`` is listed as failed or unfinished, named by its ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from transferlab.config.overrides import read_overrides

METRICS_FILE = "metrics.json"
GROUP_KEYS = ("model", "data", "size", "strategy")
# Keys of metrics.json's "config" worth putting first in the CSV; others follow.
CONFIG_FIRST = ("model", "data", "strategy", "samples_per_class", "train_fraction", "train_size", "seed")
UNFINISHED_ERROR = "no metrics.json: failed before writing it, killed, or still running"
ALL_LABEL = "all"


@dataclass
class Report:
    out_dir: Path
    jobs: pd.DataFrame
    groups: pd.DataFrame
    files: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return self.jobs["status"].value_counts().to_dict() if len(self.jobs) else {}


# --- gathering ------------------------------------------------------------------------------


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """metrics.json files and Hydra job dirs under root (hidden dirs such as .hydra,
    .submitit, .device_pool are not descended into)."""
    metrics, job_dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".hydra" in dirnames:
            job_dirs.append(Path(dirpath))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if METRICS_FILE in filenames:
            metrics.append(Path(dirpath) / METRICS_FILE)
    return metrics, job_dirs


def _job_dir_of(metrics_path: Path, root: Path) -> Path:
    # metrics.json may sit below the Hydra job dir (e.g. beside checkpoints): the job is the
    # nearest ancestor with a .hydra folder.
    for d in [metrics_path.parent, *metrics_path.parent.parents]:
        if (d / ".hydra").is_dir():
            return d
        if d == root:
            break
    return metrics_path.parent


def _config_from_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Best guess at the grouping keys of a job that never wrote its config."""
    out: dict[str, Any] = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if not sep:
            continue
        leaf = key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
        if leaf in CONFIG_FIRST:
            out[leaf] = _parse_scalar(value)
    return out


def _parse_scalar(text: str) -> Any:
    if text.lower() in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value, default=str)
    else:
        out[prefix] = value


def _row_from_metrics(path: Path, root: Path, job_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"sweep": str(root), "job": _rel(job_dir, root), "job_dir": str(job_dir)}
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, got {type(metrics).__name__}")
    except (OSError, ValueError) as e:  # a run still writing, or a crash mid-write
        overrides = read_overrides(job_dir) or []
        row.update(_config_from_overrides(overrides))
        row.update(status="failed", error=f"unreadable {METRICS_FILE}: {e}",
                   overrides=" ".join(overrides))
        return row

    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    for k, v in config.items():
        # Config values are the grouping keys, so they get plain column names.
        key = k if k not in row and k not in metrics else f"config.{k}"
        _flatten(key, v, row)
    for k, v in metrics.items():
        if k in ("config", "overrides"):
            continue
        _flatten(k, v, row)
    overrides = metrics.get("overrides")
    if not isinstance(overrides, list):
        overrides = read_overrides(job_dir) or []
    row["overrides"] = " ".join(str(o) for o in overrides)
    for k, v in _config_from_overrides(overrides).items():
        row.setdefault(k, v)
    status = metrics.get("status")
    row["status"] = str(status) if status else ("completed" if "test.acc" in row else "unknown")
    row.setdefault("error", None)
    return row


def _row_unfinished(job_dir: Path, root: Path) -> dict[str, Any]:
    overrides = read_overrides(job_dir) or []
    row = {"sweep": str(root), "job": _rel(job_dir, root), "job_dir": str(job_dir),
           "status": "unfinished", "error": UNFINISHED_ERROR, "overrides": " ".join(overrides)}
    row.update(_config_from_overrides(overrides))
    return row


def _rel(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return "." if rel == "." else rel


def collect(dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per job found under ``dirs`` (each job once, even if dirs nest or repeat)."""
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for d in dirs:
        root = Path(d).resolve()
        metrics_paths, job_dirs = _walk(root)
        for path in metrics_paths:
            job_dir = _job_dir_of(path, root)
            if path in seen:
                continue
            seen.update({path, job_dir})
            rows.append(_row_from_metrics(path, root, job_dir))
        for job_dir in job_dirs:
            if job_dir not in seen:
                seen.add(job_dir)
                rows.append(_row_unfinished(job_dir, root))
    # auto_resume copies a finished job's metrics into the relaunched sweep; with both sweeps in the
    # report, the job counts once.
    dirs_here = {str(Path(r["job_dir"]).resolve()) for r in rows}
    rows = [r for r in rows if not (isinstance(r.get("reused_from"), str) and str(Path(r["reused_from"]).resolve()) in dirs_here)]
    return _tidy(pd.DataFrame(rows))


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    first = ["sweep", "job", "status", *CONFIG_FIRST]
    metric_cols = sorted(c for c in df.columns if c.split(".")[0] in ("test", "val", "params", "time"))
    last = ["error", "overrides", "run_dir", "job_dir"]
    for c in first + last:
        if c not in df.columns:
            df[c] = None
    rest = [c for c in df.columns if c not in first + metric_cols + last]
    # Nullable dtypes keep integer columns (sizes, seeds, parameter counts) integers in the CSV
    # when some jobs lack them.
    df = df[first + metric_cols + rest + last].convert_dtypes()
    if "solver" in df.columns:
        # The L-BFGS probe is another method than extract's SGD loop: its own row and line.
        probe = (df["solver"] == "lbfgs").fillna(False)
        df.loc[probe, "strategy"] = df.loc[probe, "strategy"].astype(str) + " (lbfgs)"
    return df.sort_values(["sweep", "job"], kind="stable").reset_index(drop=True)


# --- summarising ----------------------------------------------------------------------------


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like: present
        return False


def _label(value: Any) -> str:
    if _missing(value):
        return "?"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a seed column with gaps comes back as floats
    return str(value)


def _add_size(df: pd.DataFrame) -> pd.DataFrame:
    """``size``: a label for the training-set size; ``size_x``: images per class for plots.

    ``samples_per_class`` null means the whole training set ("all", or a fraction of it). Its
    images per class are estimated from train_size, with the class count taken from runs of the
    same data set that did fix samples_per_class; failing that, size_x is left NaN.
    """
    df = df.copy()
    spc = _num(df, "samples_per_class")
    frac = _num(df, "train_fraction")
    train_size = _num(df, "train_size")
    df["size"] = [
        str(int(s)) if not math.isnan(s)
        else (f"{f:g} of train" if not math.isnan(f) else ALL_LABEL)
        for s, f in zip(spc, frac)
    ]
    classes = (train_size / spc).where(spc > 0).groupby(df["data"].map(_label)).median()
    per_class = train_size / df["data"].map(_label).map(classes)
    df["size_x"] = spc.where(spc.notna(), per_class).astype(float)
    return df


def summarize(jobs: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Mean ± std over seeds per (model, data, size, strategy) for completed jobs.

    Returns the table and the accuracy scale used (100 when accuracies are fractions).
    """
    done = jobs[jobs["status"] == "completed"].copy()
    acc_all = pd.concat([_num(done, "test.acc"), _num(done, "val.acc")])
    scale = 100.0 if acc_all.notna().any() and acc_all.max() <= 1.0 else 1.0
    if done.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "size_x", "n"]), scale
    done = _add_size(done)
    for k in ("model", "data", "strategy"):
        done[k] = done[k].map(_label)
    done["_test"] = _num(done, "test.acc") * scale
    done["_val"] = _num(done, "val.acc") * scale
    done["_trainable"] = _num(done, "params.trainable")
    done["_total"] = _num(done, "params.total")
    done["_time"] = _num(done, "time.total_s").fillna(_num(done, "time.fit_s"))

    rows = []
    for key, g in done.groupby(list(GROUP_KEYS), sort=False):
        seeds = sorted({_label(v) for v in g["seed"]}, key=lambda v: (len(v), v))
        rows.append({
            **dict(zip(GROUP_KEYS, key)),
            "size_x": g["size_x"].iloc[0],
            "n": int(g["_test"].notna().sum()),
            "seeds": ",".join(seeds),
            "test_mean": g["_test"].mean(), "test_std": g["_test"].std(ddof=1),
            "val_mean": g["_val"].mean(), "val_std": g["_val"].std(ddof=1),
            "trainable": g["_trainable"].median(), "total": g["_total"].median(),
            "time_mean": g["_time"].mean(), "time_std": g["_time"].std(ddof=1),
        })
    groups = pd.DataFrame(rows)
    groups["_size_order"] = groups["size_x"].fillna(np.inf)
    groups = groups.sort_values(["model", "data", "_size_order", "size", "strategy"], kind="stable")
    best = groups.groupby(["model", "data", "size"])["test_mean"].transform("max")
    n_strategies = groups.groupby(["model", "data", "size"])["strategy"].transform("count")
    groups["best"] = (groups["test_mean"] == best) & best.notna() & (n_strategies > 1)
    return groups.drop(columns="_size_order").reset_index(drop=True), scale


# --- markdown -------------------------------------------------------------------------------


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


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(jobs: pd.DataFrame, groups: pd.DataFrame, scale: float, dirs: Sequence[str]) -> str:
    unit = "%" if scale == 100.0 else ""
    counts = jobs["status"].value_counts().to_dict() if len(jobs) else {}
    lines = ["# Results", ""]
    lines.append("Sources: " + ", ".join(f"`{d}`" for d in dirs))
    lines.append("")
    lines.append(
        f"{len(jobs)} jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        + ". Values are mean ± std (sample std, ddof=1) over seeds; "
        "the best strategy per model, data set and size is in **bold**."
    )
    lines.append("")

    if groups.empty:
        lines += ["No completed runs yet.", ""]
    else:
        lines += [f"## Test accuracy{f' ({unit})' if unit else ''} by strategy", ""]
        for (model, data), g in groups.groupby(["model", "data"], sort=False):
            strategies = sorted(g["strategy"].unique())
            lines += [f"### {model} on {data}", ""]
            rows = []
            for size, gs in g.groupby("size", sort=False):
                by_strategy = {r.strategy: r for r in gs.itertuples()}
                row = [size]
                for s in strategies:
                    r = by_strategy.get(s)
                    row.append("–" if r is None else _bold(f"{_pm(r.test_mean, r.test_std)} (n={r.n})", r.best))
                rows.append(row)
            lines += _table(["images/class", *strategies], rows)
            lines.append("")

        lines += ["## All groups", ""]
        header = ["model", "data", "images/class", "strategy", "seeds", f"test acc{f' ({unit})' if unit else ''}",
                  f"val acc{f' ({unit})' if unit else ''}", "trainable params", "total params", "time (s)"]
        rows = [
            [r.model, r.data, r.size, _bold(r.strategy, r.best), r.seeds or "–",
             _bold(_pm(r.test_mean, r.test_std), r.best), _pm(r.val_mean, r.val_std),
             _count(r.trainable), _count(r.total), _pm(r.time_mean, r.time_std, 1)]
            for r in groups.itertuples()
        ]
        lines += _table(header, rows)
        lines.append("")

    bad = jobs[jobs["status"] != "completed"]
    lines += [f"## Failed or unfinished jobs ({len(bad)})", ""]
    if bad.empty:
        lines.append("None.")
    for r in bad.itertuples():
        where = os.path.join(r.sweep, r.job) if r.job != "." else r.sweep
        overrides = "" if _missing(r.overrides) or not r.overrides else f" (`{r.overrides}`)"
        error = "no error recorded" if _missing(r.error) else str(r.error)
        lines.append(f"- **{r.status}** `{where}`{overrides}: {_cell(error)}")
    lines.append("")
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------


def _figure(n_panels: int, panel_w: float = 5.2, panel_h: float = 3.9):
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed,
    # and whatever backend the caller's session uses is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, max(1, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_w * ncols + 2.2, panel_h * nrows + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:max(1, n_panels)]


def _colors(strategies: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(strategies)))}


def _finish(fig, title: str, path: Path, handles=None, labels=None) -> Path:
    fig.suptitle(title, fontsize=12)
    right = 1.0
    if handles:
        fig.legend(handles, labels, loc="center right", title="strategy", fontsize=9, frameon=False)
        right = 1 - 1.5 / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.savefig(path, dpi=110)
    return path


def _empty_plot(path: Path, title: str, message: str) -> Path:
    fig, (ax,) = _figure(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _finish(fig, title, path)


def _size_positions(groups: pd.DataFrame) -> tuple[pd.Series, dict[float, str]]:
    """x positions (images per class) on a log axis; sizes with no estimate go to the right."""
    x = groups["size_x"].astype(float)
    finite = x[np.isfinite(x) & (x > 0)]
    fallback = float(finite.max()) * 2 if len(finite) else 1.0
    x = x.where(np.isfinite(x) & (x > 0), fallback)
    ticks: dict[float, str] = {}
    for pos, estimated, size in zip(x, groups["size_x"], groups["size"]):
        if size[0].isdigit() or _missing(estimated):
            ticks.setdefault(float(pos), size)
        else:
            ticks.setdefault(float(pos), f"{size}\n(≈{pos:.0f})")
    return x, ticks


def plot_acc_vs_size(groups: pd.DataFrame, jobs: pd.DataFrame, scale: float, path: Path) -> Path:
    title = "Test accuracy vs training images per class (mean ± std over seeds)"
    if groups.empty:
        return _empty_plot(path, title, "no completed runs")
    from matplotlib.ticker import NullFormatter

    groups = groups.copy()
    groups["_x"], ticks = _size_positions(groups)
    colors = _colors(groups["strategy"])
    panels = list(groups.groupby(["model", "data"], sort=False))
    fig, axes = _figure(len(panels))
    handles: dict[str, Any] = {}
    for ax, ((model, data), g) in zip(axes, panels):
        for strategy, gs in g.groupby("strategy"):
            gs = gs.sort_values("_x")
            h = ax.errorbar(gs["_x"], gs["test_mean"], yerr=gs["test_std"].fillna(0), marker="o",
                            ms=4, capsize=3, lw=1.5, color=colors[strategy], label=strategy)
            handles.setdefault(strategy, h)
        ax.set_xscale("log")
        xs = sorted(set(g["_x"]))
        ax.set_xticks(xs)
        ax.set_xticklabels([ticks[x] for x in xs], fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images per class (log scale)")
        ax.set_ylabel("test accuracy" + (" (%)" if scale == 100.0 else ""))
        ax.set_title(f"{model} · {data}", fontsize=10)
        ax.grid(True, alpha=0.3)
    names = sorted(handles)
    return _finish(fig, title, path, [handles[n] for n in names], names)


def plot_acc_vs_time(groups: pd.DataFrame, jobs: pd.DataFrame, scale: float, path: Path) -> Path:
    title = "Test accuracy vs wall time per run (points: runs; markers: mean per size)"
    if groups.empty or groups["time_mean"].notna().sum() == 0:
        return _empty_plot(path, title, "no completed runs with a wall time")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    done = _add_size(jobs[jobs["status"] == "completed"])
    for k in ("model", "data", "strategy"):
        done[k] = done[k].map(_label)
    done["_t"] = _num(done, "time.total_s").fillna(_num(done, "time.fit_s"))
    done["_acc"] = _num(done, "test.acc") * scale
    colors = _colors(groups["strategy"])
    panels = list(groups.groupby(["model", "data"], sort=False))
    fig, axes = _figure(len(panels))
    handles: dict[str, Any] = {}
    for ax, ((model, data), g) in zip(axes, panels):
        runs = done[(done["model"] == model) & (done["data"] == data)]
        for strategy, gs in g.groupby("strategy"):
            c = colors[strategy]
            r = runs[runs["strategy"] == strategy]
            ax.scatter(r["_t"], r["_acc"], s=12, alpha=0.35, color=c, linewidths=0)
            gs = gs[gs["time_mean"].notna()].sort_values("time_mean")
            h = ax.errorbar(gs["time_mean"], gs["test_mean"], xerr=gs["time_std"].fillna(0),
                            yerr=gs["test_std"].fillna(0), marker="o", ms=5, capsize=2, lw=1,
                            color=c, label=strategy)
            handles.setdefault(strategy, h)
            for t, a, size in zip(gs["time_mean"], gs["test_mean"], gs["size"]):
                ax.annotate(size, (t, a), textcoords="offset points", xytext=(4, 4), fontsize=7, color=c)
        ax.set_xscale("log")
        # Sweeps often span less than two decades of time, where matplotlib's default minor
        # labels on a log axis run into each other: label 1-2-5 steps instead.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wall time per run (s, log scale)")
        ax.set_ylabel("test accuracy" + (" (%)" if scale == 100.0 else ""))
        ax.set_title(f"{model} · {data}  (labels: images/class)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    names = sorted(handles)
    return _finish(fig, title, path, [handles[n] for n in names], names)


def plot_params(jobs: pd.DataFrame, path: Path) -> Path:
    title = "Trainable parameters per strategy (bar labels: share of all parameters)"
    df = jobs.copy()
    df["_trainable"] = _num(df, "params.trainable")
    df["_total"] = _num(df, "params.total")
    df = df[df["_trainable"].notna()]
    if df.empty:
        return _empty_plot(path, title, "no runs report parameter counts")
    for k in ("model", "strategy"):
        df[k] = df[k].map(_label)
    table = df.groupby(["strategy", "model"])[["_trainable", "_total"]].median()
    strategies = sorted(table.index.get_level_values(0).unique())
    models = sorted(table.index.get_level_values(1).unique())
    from matplotlib import colormaps

    cmap = colormaps["Set2"]
    fig, (ax,) = _figure(1, panel_w=max(5.2, 1.1 * len(strategies) * max(1, len(models)) ** 0.5))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        xs, ys, shares = [], [], []
        for i, s in enumerate(strategies):
            if (s, model) in table.index:
                trainable, total = table.loc[(s, model)]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(max(trainable, 1))  # log axis: a frozen-everything run shows as 1
                shares.append(trainable / total if total and not math.isnan(total) else None)
        bars = ax.bar(xs, ys, width=width * 0.95, color=cmap(j % 8), label=model)
        for bar, share in zip(bars, shares):
            if share is not None:
                ax.annotate(f"{share:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        totals = table.xs(model, level="model")["_total"].dropna()
        if len(totals):
            ax.axhline(totals.median(), color=cmap(j % 8), ls="--", lw=1, label=f"{model}: all params")
    ax.set_yscale("log")
    ax.set_xticks(range(len(strategies)))
    ax.set_xticklabels(strategies)
    ax.set_xlabel("strategy")
    ax.set_ylabel("trainable parameters (log scale)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.margins(y=0.15)
    ax.legend(fontsize=8, title="model", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# --- entry ----------------------------------------------------------------------------------


def write_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Report:
    if not dirs:
        raise ValueError("no directories given")
    out_dir = Path(out if out is not None else dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = collect(dirs)
    if jobs.empty:
        raise FileNotFoundError(
            f"no {METRICS_FILE} and no Hydra job dirs (.hydra/) under: " + ", ".join(map(str, dirs))
        )
    groups, scale = summarize(jobs)
    files = []
    csv_path = out_dir / "results.csv"
    jobs.to_csv(csv_path, index=False)
    files.append(csv_path)
    md_path = out_dir / "results.md"
    md_path.write_text(render_markdown(jobs, groups, scale, [str(d) for d in dirs]))
    files.append(md_path)
    files.append(plot_acc_vs_size(groups, jobs, scale, out_dir / "acc_vs_size.png"))
    files.append(plot_acc_vs_time(groups, jobs, scale, out_dir / "acc_vs_time.png"))
    files.append(plot_params(jobs, out_dir / "params_by_strategy.png"))
    return Report(out_dir=out_dir, jobs=jobs, groups=groups, files=files)
