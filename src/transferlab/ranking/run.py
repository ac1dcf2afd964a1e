"""`transferlab rank`: every candidate composed, its features got, scored and timed; the table written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from transferlab import CONFIG_DIR
from transferlab.ranking.candidates import Candidate, compose_candidate
from transferlab.ranking.features import candidate_features
from transferlab.ranking.scores import SCORES, score_all
from transferlab.ranking.table import CSV_NAME, MD_NAME, add_ranks, write_csv, write_markdown
from transferlab.utils.io import atomic_write_json
from transferlab.utils.provenance import code_state, provenance

PROVENANCE_NAME = "provenance.json"  # the command, its time, the commit, library versions, machine

log = logging.getLogger(__name__)


@dataclass
class Ranking:
    rows: list[dict]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def default_out(shared: list[str]) -> Path:
    """`<paths.log_dir>/rank/<date>_<time>`, as train.py names its runs."""
    cfg = compose_candidate(Candidate("(shared overrides)", ()), shared)
    return Path(str(cfg.paths.log_dir)) / "rank" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def candidate_row(candidate: Candidate, shared: list[str]) -> dict:
    cfg = compose_candidate(candidate, shared)
    features = candidate_features(cfg)
    values, seconds = score_all(features)
    log.info("rank %s: %s", candidate.label, ", ".join(f"{k} {v if v is None else round(v, 4)}" for k, v in values.items()))
    return {
        "candidate": candidate.label,
        "model_name": features.model_name,
        # The config values a fine-tuned run's record holds, so agreement.py can find its runs.
        "config_weights": str(cfg.model.weights),
        "config_image_size": OmegaConf.select(cfg, "data.image_size"),
        "weights": features.weights,
        "image_size": features.image_size,
        "num_features": int(features.train_x.shape[1]),
        "train_size": int(len(features.train_y)),
        "val_size": int(len(features.val_y)),
        "num_classes": features.num_classes,
        **values,
        "features_s": round(features.seconds, 3),
        **{f"{name}_s": round(s, 3) for name, s in seconds.items()},
        "total_s": round(features.seconds + sum(seconds.values()), 3),
        "cache": features.cache,
    }


def rank_candidates(candidates: list[Candidate], shared: list[str], out: str | Path | None = None) -> Ranking:
    start = time.perf_counter()
    code = code_state(str(CONFIG_DIR.parent))  # the code as imported, before the first candidate runs
    for candidate in candidates:  # every candidate composes before the first one's features are built
        compose_candidate(candidate, shared)
    out_dir = Path(out) if out else default_out(shared)
    rows = add_ranks([candidate_row(c, shared) for c in candidates], list(SCORES))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "transferlab rank --candidates " + " ".join(c.label for c in candidates) + (" -- " + " ".join(shared) if shared else "")
    seconds = time.perf_counter() - start
    commit = (code["commit"] or "unknown")[:7] + ("+dirty" if code["dirty"] else "")
    preamble = (f"# Backbones ranked before fine-tuning\n\n`{command}`\n\nCommit {commit}, {seconds:.0f} s in all. "
                "Each score with its rank (1 = best); features s: backbone, data and feature extraction (or the cache); "
                "scores s: all five scores.\n\n")
    record = {"command": command, "seconds": round(seconds, 1), "finished": datetime.now().isoformat(timespec="seconds"),
              **provenance(CONFIG_DIR.parent), "code": code}
    files = [write_csv(rows, out_dir / CSV_NAME), write_markdown(rows, list(SCORES), out_dir / MD_NAME, preamble),
             atomic_write_json(out_dir / PROVENANCE_NAME, record)]
    return Ranking(rows=rows, out_dir=out_dir, files=files, seconds=seconds)
