"""A tuned-comparison sweep (experiment=tuned_compare) published under docs/results/tuned_compare/<name>/.

    python scripts/tuned_compare_table.py publish logs/tuned_compare/multiruns/<time> --name fmnist_10 --command "..."
    python scripts/tuned_compare_table.py publish logs/tuned_compare/multiruns/<time2> --name fmnist_10 --add --command "..."
    python scripts/tuned_compare_table.py render                # every published README again from its records

`publish` refuses a sweep whose jobs ran on uncommitted code or on more than one commit. It writes
the sweep's tuning.json with machine paths replaced by job numbers, a compact record of every tested
job (records/<job>.json: commit, environment, config, overrides, metrics, calibration; no paths),
and README.md. README.md is rendered from those files alone: the default and tuned arms and their
verdicts (transferlab.tune.summary's table of the sweep's tuning.json) and the test calibration
before and after temperature scaling, where the runs fitted one (eval.calibrate=temperature).
tests/test_published_tables.py fails when a README differs from what its records render.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from transferlab.config.tuning import SEARCH_ARM, TUNING_JSON
from transferlab.tune.summary import load_summary, render as render_tuning

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "tuned_compare"
KEPT = ("status", "overrides", "config", "data_sizes", "test", "val", "time", "imbalance")


def job_records(sweep: Path) -> dict[str, dict]:
    """Every job's metrics.json under the sweep dir, by job number."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name))}


def compact(record: dict) -> dict:
    prov = record.get("provenance") or {}
    calibration = {k: v for k, v in (record.get("calibration") or {}).items() if k != "checkpoint"} or None
    return {
        "code": prov.get("code") or {}, "environment": prov.get("environment") or {},
        "versions": {k: v for k, v in (prov.get("versions") or {}).items() if k in ("torch", "timm", "lightning")},
        # torch's threads decide the last digits of a re-run (transferlab reproduce sets them).
        "machine": {k: v for k, v in (prov.get("machine") or {}).items() if k in ("cpu_count", "torch_threads")} or None,
        **{k: record.get(k) for k in KEPT}, "calibration": calibration,
    }


def _job_of(run_dir: str | None, sweep: Path, named: bool = False) -> str | None:
    """A run dir as "job <n>" ("<sweep> job <n>" when `named`, for a sweep joined to a table of
    another), or "<sweep> job <n>" for a job reused from an earlier sweep beside it (None stays
    None): no machine path is published."""
    if run_dir is None:
        return None
    path = Path(run_dir).resolve()
    if path.is_relative_to(sweep.resolve()):
        return f"{sweep.name + ' ' if named else ''}job {path.relative_to(sweep.resolve()).parts[0]}"
    return f"{path.parent.name} job {path.name}"


def scrubbed_summary(sweep: Path, named: bool = False) -> dict:
    data = json.loads((sweep / TUNING_JSON).read_text())
    for outcome in data["outcomes"]:
        for run in (*outcome["trials"], *outcome["default"], *outcome["tuned"]):
            run["run_dir"] = _job_of(run.get("run_dir"), sweep, named)
    return data


def _one_clean_commit(sweep: Path, records: dict[str, dict]) -> str:
    codes = {(r.get("provenance") or {}).get("code", {}).get("commit") for r in records.values()}
    dirty = [job for job, r in records.items() if (r.get("provenance") or {}).get("code", {}).get("dirty") is not False]
    if dirty or len(codes) != 1:
        raise SystemExit(f"{sweep}: jobs {dirty or 'all'} ran on uncommitted code or on {len(codes)} commits: "
                         "published numbers need one clean commit; re-run the sweep on a clean tree")
    return codes.pop()


def publish(sweep: Path, name: str, command: str | None = None, add: bool = False,
            table_command: str | None = None) -> Path:
    """Publish a sweep as docs/results/tuned_compare/<name>/; with add, join its strategies to the
    table already there (same commit, same grid points, strategies it does not have yet)."""
    records = job_records(sweep)
    if not records:
        raise SystemExit(f"{sweep} holds no job records (<job>/metrics.json): pass a tuned_compare sweep dir")
    commit = _one_clean_commit(sweep, records)
    out = OUT / name
    summary = scrubbed_summary(sweep, named=add)
    sweeps = [{"sweep": sweep.name, "command": command}]
    prefix = ""
    if add:
        if not (out / "meta.json").is_file():
            raise SystemExit(f"--add: {out} holds no published table; publish the first sweep without --add")
        meta = json.loads((out / "meta.json").read_text())
        if meta["commit"] != commit:
            raise SystemExit(f"--add: {sweep} ran at {commit[:7]}, the table at {meta['commit'][:7]}: "
                             "a table's arms share one commit; re-run the sweep at that commit")
        published = json.loads((out / TUNING_JSON).read_text())
        have = {(tuple(o["grid"]), o["strategy"]) for o in published["outcomes"]}
        again = sorted({o["strategy"] for o in summary["outcomes"] if (tuple(o["grid"]), o["strategy"]) in have})
        if again:
            raise SystemExit(f"--add: {', '.join(again)} already in {out}: add a sweep of other strategies")
        if published["trials_per_strategy"] != summary["trials_per_strategy"]:
            raise SystemExit("--add: the sweeps tuned with different budgets (tune.trials): a table compares equal budgets")
        summary["outcomes"] = published["outcomes"] + summary["outcomes"]
        sweeps = meta.get("sweeps") or [{"sweep": meta["sweep"], "command": meta.get("command")}]
        sweeps.append({"sweep": sweep.name, "command": command})
        prefix = f"{sweep.name}-"
        command = table_command or meta.get("command")
    (out / "records").mkdir(parents=True, exist_ok=True)
    for job, record in records.items():
        if (record.get("config") or {}).get("tune_arm") != SEARCH_ARM:
            (out / "records" / f"{prefix}{job}.json").write_text(json.dumps(compact(record), indent=1) + "\n")
    (out / TUNING_JSON).write_text(json.dumps(summary, indent=1) + "\n")
    meta = {"command": table_command or command, "sweep": sweeps[0]["sweep"], "commit": commit}
    if len(sweeps) > 1:
        meta["sweeps"] = sweeps
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "README.md").write_text(render(out))
    return out


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "\u2013"


def calibration_table(records: list[dict]) -> list[str]:
    """Test ECE and NLL before and after temperature, per grid point, strategy and arm (means over seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("calibration") and r["status"] == "completed":
            c = r["config"]
            groups.setdefault((c["samples_per_class"], c["strategy"], c.get("tune_arm") or "default"), []).append(r["calibration"])
    if not groups:
        return []
    lines = ["", "## Calibration: temperature fitted on validation (`eval.calibrate=temperature`)", "",
             "Test split, mean over the seeds; T is the fitted temperature (logits divided by it).", "",
             "| per class | strategy | arm | seeds | T | ECE before | ECE after | NLL before | NLL after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (size, strategy, arm), cals in sorted(groups.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1], kv[0][2])):
        test = [c["test"] for c in cals]
        lines.append(f"| {size} | {strategy} | {arm} | {len(cals)} | {_mean([c['temperature'] for c in cals])} | "
                     f"{_mean([t['before']['ece'] for t in test])} | {_mean([t['after']['ece'] for t in test])} | "
                     f"{_mean([t['before']['nll'] for t in test])} | {_mean([t['after']['nll'] for t in test])} |")
    return lines


def render(out: Path) -> str:
    meta = json.loads((out / "meta.json").read_text())
    outcomes, trials = load_summary(out / TUNING_JSON)
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    tuning = render_tuning(outcomes, trials)
    body = re.sub(r"^# Tuned comparison\n", "", tuning)
    sweeps = meta.get("sweeps") or [{"sweep": meta["sweep"]}]
    names = " and ".join(f"`{s['sweep']}`" for s in sweeps)
    lines = [f"# Tuned comparison: {out.name}", "",
             f"{'Sweeps' if len(sweeps) > 1 else 'Sweep'} {names} at commit {meta['commit'][:7]} (clean tree); every "
             "tested job's record is in `records/`, every trial in `tuning.json`. Rendered by "
             "`python scripts/tuned_compare_table.py render`.", ""]
    if meta.get("command"):
        lines += ["```bash", meta["command"], "```", ""]
    if len(sweeps) > 1:
        lines += ["The table joins the sweeps' strategies (the command above runs them in one sweep):", "",
                  *[f"- `{s['sweep']}`: `{s['command']}`" for s in sweeps], ""]
    return "\n".join(lines) + "\n" + body.lstrip("\n") + "\n".join(calibration_table(records)) + "\n"


def rendered_dirs() -> list[Path]:
    return sorted(p.parent for p in OUT.glob("*/meta.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    pub = sub.add_parser("publish", help="copy a finished sweep's records here and render its table")
    pub.add_argument("sweep", type=Path)
    pub.add_argument("--name", required=True, help="the folder under docs/results/tuned_compare/")
    pub.add_argument("--command", default=None, help="the command that ran the sweep, shown above its table")
    pub.add_argument("--add", action="store_true",
                     help="join the sweep's strategies to the table published under --name (same commit and budget)")
    pub.add_argument("--table-command", default=None,
                     help="with --add: the one command that runs every strategy of the joined table")
    sub.add_parser("render", help="render every published table from its records")
    args = parser.parse_args(argv)
    if args.action == "publish":
        print(f"wrote {publish(args.sweep, args.name, args.command, args.add, args.table_command).relative_to(ROOT)}")
    else:
        for out in rendered_dirs():
            (out / "README.md").write_text(render(out))
            print(f"wrote {(out / 'README.md').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
