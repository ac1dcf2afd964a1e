"""The report's figures, each built from a table of what it draws (the *_series functions), so a
test can check the figure against the numbers and a notebook can show it without saving.

Figures use matplotlib's object API with an Agg canvas: no pyplot global state, no display
needed, and whatever backend the caller's session uses is left alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from transferlab.config.tuning import TUNED_ARM

DPI = 110


def _figure(n_panels: int, panel_w: float = 5.2, panel_h: float = 3.9) -> tuple[Figure, list]:
    ncols = min(3, max(1, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_w * ncols + 2.2, panel_h * nrows + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:max(1, n_panels)])


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


@dataclass(frozen=True)
class Style:
    color: Any
    marker: str
    tuned: bool = False  # a tuned arm: its strategy's colour and marker, dashed and hollow

    @property
    def linestyle(self) -> str:
        return "--" if self.tuned else "-"

    @property
    def face(self) -> Any:
        return "none" if self.tuned else self.color


def _palette(n: int) -> list:
    """n colours, no two alike: tab20's dark shades first, then its light ones (so up to ten
    strategies get ten unlike hues), and beyond twenty, hues spaced round the circle."""
    if n <= 20:
        tab20 = colormaps["tab20"]
        return [tab20(i) for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]
    hsv = colormaps["hsv"]
    return [hsv(i / n) for i in range(n)]


def untuned_label(label: str) -> tuple[str, bool]:
    """A row label without its tuned-arm mark, and whether it had one: "partial (tuned)" is
    ("partial", True), "lora (r=8, tuned)" is ("lora (r=8)", True)."""
    match = re.fullmatch(r"(.*) \((.*)\)", label)
    if not match:
        return label, False
    parts = [p.strip() for p in match.group(2).split(",")]
    if TUNED_ARM not in parts:
        return label, False
    rest = [p for p in parts if p != TUNED_ARM]
    return (f"{match.group(1)} ({', '.join(rest)})" if rest else match.group(1)), True


def strategy_styles(names: Iterable[str]) -> dict[str, Style]:
    """A colour and a marker of its own for every strategy, by sorted name: one report computes it
    once from all its strategies, so a strategy looks the same in every plot. A tuned arm shares
    its default arm's colour and marker and is drawn dashed and hollow, so the pair reads as one
    method at two settings."""
    labels = sorted({str(n) for n in names})
    base = {label: untuned_label(label) for label in labels}
    ordered = sorted({b for b, _ in base.values()})
    looks = {name: (color, MARKERS[i % len(MARKERS)]) for i, (name, color) in enumerate(zip(ordered, _palette(len(ordered))))}
    return {label: Style(*looks[b], tuned=tuned) for label, (b, tuned) in base.items()}


def _finish(fig: Figure, title: str, handles: dict[str, Any] | None = None) -> Figure:
    fig.suptitle(title, fontsize=12)
    right = 1.0
    if handles:
        names = sorted(handles)
        fig.legend([handles[n] for n in names], names, loc="center right", title="strategy", fontsize=9, frameon=False)
        right = 1 - 1.5 / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, right, 1))
    return fig


def _empty(title: str, message: str) -> Figure:
    fig, (ax,) = _figure(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _finish(fig, title)


def _accuracy_label(scale: float) -> str:
    return "test accuracy" + (" (%)" if scale == 100.0 else "")


def save(fig: Figure, path: str | Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return Path(path)


# --- accuracy vs training-set size -----------------------------------------------------------


def size_series(groups: pd.DataFrame) -> pd.DataFrame:
    """What acc_vs_size draws: per (model, data) panel and strategy, a line through each size's
    group mean at x = images per class (sizes with no estimate to the right of the largest), with
    the std as error bar, and the tick label of each x."""
    if groups.empty:
        return pd.DataFrame(columns=["model", "data", "strategy", "size", "x", "tick", "mean", "std"])
    x = groups["size_x"].astype(float)
    finite = x[np.isfinite(x) & (x > 0)]
    fallback = float(finite.max()) * 2 if len(finite) else 1.0
    x = x.where(np.isfinite(x) & (x > 0), fallback)
    exact = groups["size"].str[0].str.isdigit() | groups["size_x"].isna()
    tick = groups["size"].where(exact, groups["size"] + "\n(≈" + x.map("{:.0f}".format) + ")")
    series = pd.DataFrame({"model": groups["model"], "data": groups["data"], "strategy": groups["strategy"],
                           "size": groups["size"], "x": x, "tick": tick, "mean": groups["test_mean"],
                           "std": groups["test_std"]})
    return series.sort_values(["model", "data", "strategy", "x"], kind="stable").reset_index(drop=True)


def acc_vs_size(groups: pd.DataFrame, scale: float, styles: dict[str, Style] | None = None) -> Figure:
    title = "Test accuracy vs training images per class (mean ± std over seeds)"
    series = size_series(groups)
    if series.empty:
        return _empty(title, "no completed runs")
    styles = styles or strategy_styles(series["strategy"])
    panels = list(series.groupby(["model", "data"], sort=False))
    fig, axes = _figure(len(panels))
    handles: dict[str, Any] = {}
    for ax, ((model, data), panel) in zip(axes, panels):
        for strategy, line in panel.groupby("strategy", sort=False):
            style = styles[strategy]
            handles[strategy] = ax.errorbar(line["x"], line["mean"], yerr=line["std"].fillna(0), marker=style.marker, ms=5,
                                            capsize=3, lw=1.5, ls=style.linestyle, mfc=style.face, color=style.color,
                                            label=strategy)
        ticks = panel.drop_duplicates("x").sort_values("x")
        ax.set_xscale("log")
        ax.set_xticks(ticks["x"].tolist())
        ax.set_xticklabels(ticks["tick"].tolist(), fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images per class (log scale)")
        ax.set_ylabel(_accuracy_label(scale))
        ax.set_title(f"{model} · {data}", fontsize=10)
        ax.grid(True, alpha=0.3)
    return _finish(fig, title, handles)


# --- accuracy vs wall time -------------------------------------------------------------------


def time_series(groups: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What acc_vs_time draws: the group means (time, accuracy, size label) as markers joined per
    strategy, and each counted run as a point."""
    means = groups[groups["time_mean"].notna()][["model", "data", "strategy", "size", "time_mean", "time_std",
                                                 "test_mean", "test_std"]]
    means = means.sort_values(["model", "data", "strategy", "time_mean"], kind="stable").reset_index(drop=True)
    points = runs[runs["time"].notna()][["model", "data", "strategy", "size", "seed", "time", "test"]]
    return means, points.reset_index(drop=True)


def acc_vs_time(groups: pd.DataFrame, runs: pd.DataFrame, scale: float, styles: dict[str, Style] | None = None) -> Figure:
    title = "Test accuracy vs wall time per run (points: runs; markers: mean per size)"
    means, points = time_series(groups, runs)
    if means.empty:
        return _empty(title, "no completed runs with a wall time")
    styles = styles or strategy_styles(means["strategy"])
    panels = list(means.groupby(["model", "data"], sort=False))
    fig, axes = _figure(len(panels))
    handles: dict[str, Any] = {}
    for ax, ((model, data), panel) in zip(axes, panels):
        for strategy, line in panel.groupby("strategy", sort=False):
            style = styles[strategy]
            c = style.color
            p = points[(points["model"] == model) & (points["data"] == data) & (points["strategy"] == strategy)]
            ax.scatter(p["time"], p["test"], s=12, alpha=0.35, facecolors=style.face, edgecolors=c, marker=style.marker,
                       linewidths=0.8 if style.tuned else 0, label=f"{strategy} runs")
            handles[strategy] = ax.errorbar(line["time_mean"], line["test_mean"], xerr=line["time_std"].fillna(0),
                                            yerr=line["test_std"].fillna(0), marker=style.marker, ms=5, capsize=2, lw=1,
                                            ls=style.linestyle, mfc=style.face, color=c, label=strategy)
            for t, a, size in zip(line["time_mean"], line["test_mean"], line["size"]):
                ax.annotate(size, (t, a), textcoords="offset points", xytext=(4, 4), fontsize=7, color=c)
        ax.set_xscale("log")
        # Sweeps often span less than two decades of time, where matplotlib's default minor
        # labels on a log axis run into each other: label 1-2-5 steps instead.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wall time per run (s, log scale)")
        ax.set_ylabel(_accuracy_label(scale))
        ax.set_title(f"{model} · {data}  (labels: images/class)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, title, handles)


# --- trainable parameters --------------------------------------------------------------------


def params_series(runs: pd.DataFrame) -> pd.DataFrame:
    """What params_by_strategy draws: per (strategy, model) the median trainable and total
    parameter counts of the counted runs."""
    known = runs[runs["trainable"].notna()]
    table = known.groupby(["strategy", "model"])[["trainable", "total"]].median()
    return table.reset_index()


def params_by_strategy(runs: pd.DataFrame) -> Figure:
    title = "Trainable parameters per strategy (bar labels: share of all parameters)"
    table = params_series(runs)
    if table.empty:
        return _empty(title, "no runs report parameter counts")
    strategies = sorted(table["strategy"].unique())
    models = sorted(table["model"].unique())
    cmap = colormaps["Set2"]
    fig, (ax,) = _figure(1, panel_w=max(5.2, 1.1 * len(strategies) * max(1, len(models)) ** 0.5))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        rows = table[table["model"] == model].set_index("strategy")
        xs = [strategies.index(s) - 0.4 + width * (j + 0.5) for s in rows.index]
        ys = rows["trainable"].clip(lower=1)  # log axis: a frozen-everything run shows as 1
        bars = ax.bar(xs, ys, width=width * 0.95, color=cmap(j % 8), label=model)
        for bar, trainable, total in zip(bars, rows["trainable"], rows["total"]):
            if total and not math.isnan(total):
                ax.annotate(f"{trainable / total:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        totals = rows["total"].dropna()
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
    return fig
