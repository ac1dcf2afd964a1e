"""Does the ranking hold? Kendall's tau between each score and the fine-tuned test accuracy.

The truth is the records (metrics.json) of runs that fine-tuned the same candidates: each table
row is matched to the completed runs with its architecture, `model.weights` and `data.image_size`,
and their test accuracy is averaged over seeds. The confidence interval resamples candidates with
replacement (seeded), the unit the claim is about; a resample that leaves one distinct candidate
has no tau and is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.errors import ConfigError
from transferlab.record import RunRecord, RecordError
from transferlab.ranking.table import write_csv
from transferlab.run_dirs import find_run_dirs
from transferlab.utils.io import atomic_write_bytes

BOOTSTRAP = 2000
LEVEL = 0.95
MIN_CANDIDATES = 3


@dataclass
class Truth:
    test_acc: float  # mean over the matched runs
    runs: int
    seconds: float  # the matched runs' total wall time
    test_sd: float | None = None  # over the matched runs (seeds); None for one run
    commits: tuple[str, ...] = ()  # the code the runs came from, "<sha7>" or "<sha7>+dirty"


def _commit(record: RunRecord) -> str:
    code = (record.provenance or {}).get("code") or {}
    return f"{(code.get('commit') or 'unknown')[:7]}{'+dirty' if code.get('dirty') else ''}"


def run_key(model_name, weights, image_size) -> tuple:
    return (str(model_name), str(weights), None if image_size in (None, "") else int(image_size))


def fine_tuned(dirs: list[str | Path]) -> dict[tuple, Truth]:
    """Completed runs under `dirs` by (architecture, model.weights, data.image_size), one strategy."""
    found: dict[tuple, list[RunRecord]] = {}
    strategies = set()
    for root in dirs:
        for run in find_run_dirs(root, inside=True):
            if not run.metrics:
                continue
            try:
                record = RunRecord.read(run.path / "metrics.json")
            except RecordError:
                continue
            if not record.completed or record.test.get("acc") is None:
                continue
            c = record.config
            strategies.add(c.strategy if c.variant is None else f"{c.strategy} ({c.variant})")
            found.setdefault(run_key(c.model_name, c.weights, c.image_size), []).append(record)
    if len(strategies) > 1:
        raise ConfigError(f"the runs under {', '.join(map(str, dirs))} used {len(strategies)} strategies "
                          f"({', '.join(sorted(map(str, strategies)))}): pass a sweep of one strategy to --against")
    return {
        key: Truth(float(np.mean([r.test["acc"] for r in records])), len(records),
                   float(sum(r.time.total_s or 0.0 for r in records)),
                   float(np.std([r.test["acc"] for r in records], ddof=1)) if len(records) > 1 else None,
                   tuple(sorted({_commit(r) for r in records})))
        for key, records in found.items()
    }


def kendall_ci(x: list[float], y: list[float], bootstrap: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL) -> dict:
    """tau-b, its p-value, and the percentile interval of tau over candidates resampled with replacement."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    tau, p = kendalltau(x, y)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(x), len(x))
        t = kendalltau(x[pick], y[pick])[0] if len(set(pick.tolist())) > 1 else math.nan
        if not math.isnan(t):
            taus.append(t)
    low, high = (np.quantile(taus, [(1 - level) / 2, (1 + level) / 2]) if taus else (math.nan, math.nan))
    return {"tau": float(tau), "p": float(p), "low": float(low), "high": float(high), "n": len(x), "resamples": len(taus)}


def agreement(rows: list[dict], scores: list[str], dirs: list[str | Path], seed: int = 0,
              bootstrap: int = BOOTSTRAP) -> tuple[list[dict], list[dict]]:
    """(one row per score: tau, its CI and p; the table's rows with their fine-tuned accuracy)."""
    truth = fine_tuned(dirs)
    matched = []
    for row in rows:
        t = truth.get(run_key(row["model_name"], row["config_weights"], row.get("config_image_size")))
        matched.append({**row, "test_acc": None if t is None else t.test_acc, "runs": 0 if t is None else t.runs,
                        "test_sd": None if t is None else t.test_sd, "finetune_s": None if t is None else t.seconds,
                        "commits": "" if t is None else " ".join(t.commits)})
    have = [r for r in matched if r["test_acc"] is not None]
    if len(have) < MIN_CANDIDATES:
        missing = [r["candidate"] for r in matched if r["test_acc"] is None]
        raise ConfigError(f"{len(have)} of {len(rows)} candidates have completed runs under {', '.join(map(str, dirs))} "
                          f"(none for {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}): Kendall's tau needs "
                          f"{MIN_CANDIDATES} or more; fine-tune the candidates with the same model, model.weights and "
                          "data.image_size overrides")
    out = []
    for name in scores:
        pairs = [(r[name], r["test_acc"]) for r in have if r.get(name) is not None]
        if len(pairs) < MIN_CANDIDATES:
            out.append({"score": name, "n": len(pairs), "tau": None, "p": None, "low": None, "high": None})
            continue
        x, y = zip(*pairs)
        out.append({"score": name, **kendall_ci(list(x), list(y), bootstrap=bootstrap, seed=seed)})
    return out, matched


def agreement_markdown(taus: list[dict], matched: list[dict]) -> str:
    finetune_s = sum(r["finetune_s"] or 0.0 for r in matched)
    rank_s = sum(r.get("total_s") or 0.0 for r in matched if r["test_acc"] is not None)
    lines = [f"Kendall's tau between each score and the fine-tuned test accuracy, over "
             f"{sum(r['test_acc'] is not None for r in matched)} candidates ({int(LEVEL * 100)} % bootstrap CI over "
             "candidates). Ranking them with every score took "
             f"{rank_s:.0f} s; the matched fine-tuning runs {finetune_s:.0f} s.", "",
             "Each score's own cost is the features and that score alone, over the same candidates, and its share "
             "of the fine-tuning time.", "",
             "| score | candidates | tau | CI | p | features + score s | share of fine-tuning |", "|---|---|---|---|---|---|---|"]
    for t in taus:
        own = sum((r.get("features_s") or 0.0) + (r.get(f"{t['score']}_s") or 0.0) for r in matched if r["test_acc"] is not None)
        cost = f"{own:.0f} | {100 * own / finetune_s:.1f} %" if finetune_s else f"{own:.0f} | \u2013"
        if t["tau"] is None:
            lines.append(f"| {t['score']} | {t['n']} | n/a | | | {cost} |")
        else:
            lines.append(f"| {t['score']} | {t['n']} | {t['tau']:+.3f} | {t['low']:+.3f} to {t['high']:+.3f} | {t['p']:.3g} | {cost} |")
    commits = sorted({c for r in matched for c in (r.get("commits") or "").split()})
    lines += ["", f"The fine-tuned test accuracy (mean and sd over its runs), from commit {', '.join(commits) or 'unknown'}:", "",
              "| candidate | test acc | sd | runs |", "|---|---|---|---|"]
    for r in matched:
        acc = "–" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        sd = "–" if r.get("test_sd") is None else f"{r['test_sd']:.4f}"
        lines.append(f"| `{r['candidate']}` | {acc} | {sd} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def write_agreement(taus: list[dict], matched: list[dict], out_dir: Path) -> list[Path]:
    """agreement.csv (tau per score) and agreement.md (that, and each candidate's accuracy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_csv(taus, out_dir / "agreement.csv"),
            atomic_write_bytes(out_dir / "agreement.md", ("# Ranking against fine-tuning\n\n" + agreement_markdown(taus, matched)).encode())]
