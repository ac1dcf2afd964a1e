"""Write docs/configuration.md, the configuration reference, from the configs and the code's rules.

    python scripts/config_reference.py           # (make config-reference) writes the file
    python scripts/config_reference.py --check   # exits 1 when the committed file is stale

The rendering is transferlab.config.reference; this script gathers what it reads (the rules and
the strategies, which live in different layers) and writes or compares the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "configuration.md"


def run_rules() -> dict:
    """The range rules of the run config's keys, by dotted key. The one place to change when rules
    move: the reference shows what this returns. A backbone kind's own model.* keys come with
    their kind (models/<kind>_backbone.py)."""
    from transferlab.config.checks import RULES, rules_of
    from transferlab.engine.pretrain import MLMConfig  # task.mlm.*'s knobs, checked like a strategy's
    from transferlab.models.backbone import kinds

    by_kind = {k: r for kind in kinds() for k, r in kind.rules.items()}
    return {**RULES, **by_kind, **{f"task.mlm.{k}": r for k, r in rules_of(MLMConfig).items()}}


def strategies() -> dict:
    from transferlab.finetune.strategies import STRATEGIES

    return dict(STRATEGIES)


def fresh() -> str:
    from transferlab import CONFIG_DIR
    from transferlab.config.reference import render

    return render(CONFIG_DIR, run_rules(), strategies())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md differs from a fresh render")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = fresh()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python scripts/config_reference.py (make config-reference)", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
