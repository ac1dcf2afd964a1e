"""The ``transferlab`` command. Training itself runs through ``train.py`` (Hydra owns that
command line); this one holds the tools around it, one subcommand each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _report(args: argparse.Namespace) -> int:
    from transferlab.errors import TransferlabError
    from transferlab.report import write_report  # pandas and matplotlib load only when needed
    from transferlab.report.experiments import example_noun, size_phrase

    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        print(f"transferlab report: not a directory: {', '.join(missing)}: pass the run or multirun "
              "directories train.py wrote", file=sys.stderr)
        return 2
    try:
        report = write_report(args.dirs, args.out)
    except TransferlabError as e:
        print(f"transferlab report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # reading is forgiving (unreadable records are rows), so this is writing
        where = e.filename or args.out or args.dirs[0]
        print(f"transferlab report: cannot write {where} ({e.strerror or e}): pass --out <a folder you can write>",
              file=sys.stderr)
        return 2
    counts = report.counts()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"{len(report.jobs)} jobs ({summary}), {len(report.groups)} groups")
    runs = report.runs
    for c in report.comparisons.itertuples():
        noun = example_noun(runs[(runs["model"] == c.model) & (runs["data"] == c.data)])
        print(f"{c.model} · {c.data} · {size_phrase(c.size, noun)}: {c.verdict}")
    for path in report.files:
        print(f"wrote {path}")
    return 0


def _failed(tool: str, error: Exception, out: str | None) -> int:
    """A user error, or an output that cannot be written, as one line on stderr; exit status 2."""
    if isinstance(error, OSError):
        text = f"cannot write {error.filename or out} ({error.strerror or error}): pass --out <a folder you can write>"
    else:
        text = " ".join(str(error).split())
    print(f"transferlab {tool}: {text}", file=sys.stderr)
    return 2


def _log_to_stderr(level: int) -> None:
    """Log records as bare messages on whatever sys.stderr is when each is written. basicConfig
    binds the stream of its first call, and a second command in the same process (a notebook, the
    tests' capture) would then write to a stream that has since been closed."""
    import logging

    class CurrentStderr(logging.StreamHandler):
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _value) -> None:
            pass

    root = logging.getLogger()
    root.setLevel(level)
    if not any(type(h).__name__ == CurrentStderr.__name__ for h in root.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)


def _export(args: argparse.Namespace) -> int:
    import logging

    from transferlab.errors import TransferlabError
    from transferlab.export import export_run

    _log_to_stderr(logging.INFO)
    try:
        result = export_run(args.run, args.format, args.out, inputs=args.inputs, log_dir=args.log_dir,
                            overwrite=args.overwrite)
    except (TransferlabError, OSError) as e:
        return _failed("export", e, args.out)
    v = result.verification
    check = (f"checked on {v['inputs']} at batch {', '.join(map(str, v['batch_sizes']))}: max |logit diff| "
             f"{v['max_abs_diff']:.2e}, argmax {'identical' if v['argmax_equal'] else 'different'}") if v else "not checked"
    print(f"exported {args.format} to {result.out_dir} ({', '.join(sorted(result.files.values()))}); {check}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    import logging

    from transferlab.errors import ConfigError, TransferlabError
    from transferlab.ranking.agreement import agreement, agreement_markdown, write_agreement
    from transferlab.ranking.candidates import parse_candidates
    from transferlab.ranking.run import rank_candidates
    from transferlab.ranking.scores import SCORES
    from transferlab.ranking.table import markdown, read_csv

    _log_to_stderr(logging.WARNING)
    try:
        if args.table:
            if args.candidates or args.overrides:
                raise ConfigError("--table reads a written table: pass either --table or --candidates, not both")
            if not args.against:
                raise ConfigError("--table is for checking a table: add --against <the fine-tuned sweep's directory>")
            table = Path(args.table)
            if table.is_dir():
                table = table / "ranking.csv"
            if not table.is_file():
                raise ConfigError(f"--table {args.table}: no ranking.csv there; pass the folder or the csv transferlab rank wrote")
            rows, out_dir, files = read_csv(table), Path(args.out or table.parent), []
        else:
            ranking = rank_candidates(parse_candidates(args.candidates or []), list(args.overrides), args.out)
            rows, out_dir, files = ranking.rows, ranking.out_dir, list(ranking.files)
            print(markdown(rows, list(SCORES)), end="")
        if args.against:
            missing = [d for d in args.against if not Path(d).is_dir()]
            if missing:
                raise ConfigError(f"--against {', '.join(missing)}: not a directory; pass the multirun directory "
                                  "train.py wrote for the fine-tuned candidates")
            taus, matched = agreement(rows, list(SCORES), args.against, seed=args.seed)
            print(agreement_markdown(taus, matched), end="")
            files += write_agreement(taus, matched, out_dir)
    except (TransferlabError, OSError) as e:
        return _failed("rank", e, args.out)
    for path in files:
        print(f"wrote {path}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    import time

    from transferlab.errors import ConfigError, TransferlabError
    from transferlab.reproduce.rerun import prepare_out, rerun, write_report
    from transferlab.reproduce.sources import cheapest, recorded_runs

    try:
        chosen, listed = [], []
        for target in args.targets:
            runs = recorded_runs(target)
            listed += runs
            if args.run:
                picked = [r for r in runs if r.name in args.run or r.name.split("/")[-1] in args.run]
            else:
                picked = [r for r in runs if r.completed] if args.all else [cheapest(runs)]
            # Tables that cite the same run (semi_supervised repeats data_efficiency's rows) re-run it
            # once: the same overrides, commit and figures.
            seen = {(c.overrides, c.commit, tuple(sorted(c.figures.items()))) for c in chosen}
            chosen += [r for r in picked if (r.overrides, r.commit, tuple(sorted(r.figures.items()))) not in seen]
        if not chosen:
            names = ", ".join(r.name for r in listed[:8])
            raise ConfigError(f"--run {' '.join(args.run)} matches no run of {' '.join(args.targets)}: "
                              f"pass one of its run names ({names}, ...) or leave --run out")
        if args.list:
            for r in chosen:
                print(f"{r.name}: python train.py {' '.join(r.overrides)}")
            return 0
        out = prepare_out(Path(args.out or Path("logs") / "reproduce" / time.strftime("%Y-%m-%d_%H-%M-%S")))
        results = []
        for r in chosen:
            print(f"re-running {r.name}: python train.py {' '.join(r.overrides)}", flush=True)
            results.append(rerun(r, out))
        md, js, text = write_report(results, out, Path(__file__).resolve().parents[2])
    except (TransferlabError, OSError) as e:
        return _failed("reproduce", e, args.out)
    print(text, end="")
    print(f"wrote {md}\nwrote {js}")
    return 0 if all(r.status == "completed" for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferlab",
        description="Tools around transferlab runs. Training itself: python train.py (Hydra).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    report = sub.add_parser(
        "report",
        help="gather the metrics.json of runs and sweeps into a CSV, a markdown table and plots",
        description="Walk each DIR for metrics.json files (and Hydra job dirs that have none: "
        "failed or unfinished jobs) and write results.csv, comparisons.csv, results.md, acc_vs_size.png, "
        "acc_vs_time.png and params_by_strategy.png. Paths in them are relative to the output directory.",
    )
    report.add_argument("dirs", nargs="+", metavar="DIR", help="run or multirun directories")
    report.add_argument("--out", "-o", default=None, help="output directory (default: the first DIR)")
    report.set_defaults(func=_report)

    from transferlab.export.formats import format_names

    export = sub.add_parser(
        "export",
        help="write a trained run as ONNX, a timm folder or TorchScript, with its preprocessing and a model card",
        description="Rebuild the run's model from its checkpoint (LoRA adapters merged), write it in one format, and "
        "check the written model against the trained one on real inputs before keeping it. Beside it: "
        "transferlab.json (preprocessing, class names) and README.md (the model card).",
    )
    export.add_argument("run", metavar="RUN", help="a .ckpt file, a run directory (the checkpoint it tested) or `last`")
    export.add_argument("--format", "-f", required=True, choices=format_names())
    export.add_argument("--out", "-o", required=True, help="the folder to write (new or empty)")
    export.add_argument("--inputs", default=None, help="images to check the export on (default: the run's test split)")
    export.add_argument("--log-dir", default="logs", help="where `last` looks for runs (default: logs)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.set_defaults(func=_export)

    rank = sub.add_parser(
        "rank",
        help="score candidate backbones on a run's training subset from their frozen features, before fine-tuning",
        description="Compose each candidate (comma-separated overrides) with the shared OVERRIDES after --, get its "
        "features of the training subset and validation split through the feature cache, and score them: LogME, NCE "
        "and LEEP (with the source classifier, n/a without one), H-score, the L-BFGS probe's validation accuracy. "
        "Writes ranking.csv and ranking.md; with --against, Kendall's tau of each score against fine-tuned runs "
        "(agreement.csv, agreement.md). docs/ranking.md",
    )
    rank.add_argument("--candidates", "-c", nargs="+", default=None, metavar="CANDIDATE",
                      help="e.g. model=efficientnet_lite0,data.image_size=128 model=timm,model.name=resnet18,model.weights=none")
    rank.add_argument("overrides", nargs="*", metavar="OVERRIDES",
                      help="after --: Hydra overrides every candidate shares, e.g. data=fashion_mnist data.samples_per_class=100")
    rank.add_argument("--out", "-o", default=None, help="output folder (default: <paths.log_dir>/rank/<date>_<time>)")
    rank.add_argument("--against", nargs="+", default=None, metavar="DIR",
                      help="run or multirun directories that fine-tuned the candidates: Kendall's tau per score")
    rank.add_argument("--table", default=None, help="a ranking.csv (or its folder) written before: check it --against DIR")
    rank.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: 0)")
    rank.set_defaults(func=_rank)

    reproduce = sub.add_parser(
        "reproduce",
        help="re-run a published table's runs at the current commit and print old and new figures side by side",
        description="Read the runs a TARGET publishes (a results.csv, a folder of records such as "
        "docs/results/<table>/, or one metrics.json), re-run each one's overrides through train.py at the current "
        "commit, and print the recorded and the new test accuracy, macro-F1, ECE and validation accuracy. "
        "Writes reproduce.md and reproduce.json to --out. By default each TARGET's cheapest completed run.",
    )
    reproduce.add_argument("targets", nargs="+", metavar="TARGET", help="a published table's folder, a results.csv or a record")
    which = reproduce.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every completed run, not only the cheapest")
    which.add_argument("--run", nargs="+", default=None, metavar="NAME", help="these runs, by name (as --list prints them)")
    reproduce.add_argument("--list", action="store_true", help="print the chosen runs and their commands; run nothing")
    reproduce.add_argument("--out", "-o", default=None, help="output folder (default: logs/reproduce/<date>_<time>)")
    reproduce.set_defaults(func=_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
