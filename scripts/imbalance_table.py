"""Each class-imbalance option on a skewed Fashion-MNIST (experiment=imbalance: class 0 cut to a
tenth of its training pool), 3 seeds: the cut class's test precision and recall, and macro-F1.

    python scripts/imbalance_table.py                    # run every arm x seed, then write the table
    python scripts/imbalance_table.py --render           # the table again from the committed records
    python scripts/imbalance_table.py --arms natural_none --seeds 1

Each run writes a compact record (its metrics.json without machine paths: commit, environment,
config, metrics, confusion matrix, imbalance entry) to docs/results/imbalance/<arm>_seed<seed>.json,
and the table docs/results/imbalance/README.md is rendered from those records alone. A tree with
uncommitted code is refused: every published number must come from committed code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "imbalance"
CUT_CLASS = 0  # experiment=imbalance's data.skew
NATURAL_SUBSET = ["data.samples_per_class=null", "data.train_fraction=0.02"]
# arm -> (the subset it trains on, the overrides on top of experiment=imbalance)
ARMS: dict[str, tuple[str, list[str]]] = {
    "balanced_none": ("100 per class", []),
    "natural_none": ("0.02 of the pool", NATURAL_SUBSET),
    "natural_class_weights": ("0.02 of the pool", [*NATURAL_SUBSET, "optim.class_weights=balanced"]),
    "natural_sampler": ("0.02 of the pool", [*NATURAL_SUBSET, "data.sampler=balanced"]),
    "natural_logit_adjustment": ("0.02 of the pool", [*NATURAL_SUBSET, "optim.logit_adjustment=true"]),
}
SEEDS = (1, 2, 3)


def dirty_code() -> str:
    """What `git status` says of tracked files; empty on a clean tree."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def compact(record: dict, arm: str, seed: int, command: list[str]) -> dict:
    prov = record.get("provenance") or {}
    return {
        "arm": arm, "seed": seed, "subset": ARMS[arm][0], "command": " ".join(command),
        "status": record["status"], "code": (prov.get("code") or {}),
        "environment": prov.get("environment") or {}, "versions": {k: v for k, v in (prov.get("versions") or {}).items() if k in ("torch", "timm", "lightning")},
        "config": {k: v for k, v in record["config"].items() if k not in ("model_name",)},
        "data_sizes": record["data_sizes"], "test": record["test"], "val": record["val"],
        "imbalance": record.get("imbalance"), "confusion": {k: v for k, v in (record.get("confusion") or {}).items() if k != "picture"},
        "time": record["time"],
    }


def run_one(arm: str, seed: int, log_root: Path) -> Path:
    run_dir = log_root / f"{arm}_seed{seed}"
    command = ["python", "train.py", "experiment=imbalance", f"seed={seed}", *ARMS[arm][1]]
    proc = subprocess.run([sys.executable, *command[1:], f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    out = OUT / f"{arm}_seed{seed}.json"
    out.write_text(json.dumps(compact(record, arm, seed, command), indent=1) + "\n")
    return out


def cut_class_scores(record: dict) -> tuple[float, float]:
    """(precision, recall) of the cut class on the test split, from the confusion matrix (rows true)."""
    matrix = record["confusion"]["matrix"]
    hit = matrix[CUT_CLASS][CUT_CLASS]
    predicted = sum(row[CUT_CLASS] for row in matrix)
    return (hit / predicted if predicted else 0.0), hit / sum(matrix[CUT_CLASS])


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def render() -> str:
    records = [json.loads(p.read_text()) for p in sorted(OUT.glob("*_seed*.json"))]
    lines = [
        "# Class imbalance on a skewed Fashion-MNIST",
        "",
        "Fashion-MNIST with class 0 (T-shirt/top) cut to a tenth of its training pool (`experiment=imbalance`: "
        "`experiment=data_efficiency`'s 64 px, 5 epochs, `strategy=partial`), tested on the full, natural test set "
        "(1,000 per class). Per arm, mean ± std over the seeds, in %: the cut class's precision and recall, macro-F1 and "
        "accuracy. Each row's records are the JSON files beside this page.",
        "",
        "```bash",
        "python scripts/imbalance_table.py            # every arm x seeds 1, 2, 3; then this table",
        "python scripts/imbalance_table.py --render   # this table from the records",
        "```",
        "",
        "| arm | training subset | overrides | seeds | cut-class precision | cut-class recall | macro-F1 | accuracy | code |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, (subset, overrides) in ARMS.items():
        rows = [r for r in records if r["arm"] == arm and r["status"] == "completed"]
        if not rows:
            continue
        scores = [cut_class_scores(r) for r in rows]
        code = sorted({str(r["code"].get("commit"))[:7] + ("+dirty" if r["code"].get("dirty") else "") for r in rows})
        lines.append(
            f"| {arm} | {subset} | {' '.join(f'`{o}`' for o in overrides) or '(none)'} | {len(rows)} | "
            f"{mean_std([s[0] for s in scores])} | {mean_std([s[1] for s in scores])} | "
            f"{mean_std([r['test']['f1_macro'] for r in rows])} | {mean_std([r['test']['acc'] for r in rows])} | {', '.join(code)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="only write the table from the records there are")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.render:
        if dirty_code():
            raise SystemExit(f"uncommitted changes to tracked files:\n{dirty_code()}\ncommit them first: published numbers need committed code")
        log_root = ROOT / "logs" / "imbalance_table" / time.strftime("%Y-%m-%d_%H-%M-%S")
        for arm in args.arms:
            for seed in args.seeds:
                start = time.perf_counter()
                out = run_one(arm, seed, log_root)
                print(f"{arm} seed {seed}: {out.relative_to(ROOT)} ({time.perf_counter() - start:.0f} s)", flush=True)
    (OUT / "README.md").write_text(render())
    print(f"wrote {(OUT / 'README.md').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
