"""ModelCheckpoint that keeps its best-so-far when a resumed run writes into a new directory.

Lightning's ModelCheckpoint restores best_model_score and best_k_models only when the checkpoint
directory is unchanged; otherwise it forgets them, and the first epoch after a resume becomes the
"best" even when an earlier epoch scored higher, so the resumed run tests other weights than the
run that never stopped. Resumed runs here always get a directory of their own (resume.py), so
this callback adopts the earlier run's best checkpoints: it links (or copies) them into its own
directory, which keeps the new run complete even if the old one is deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def _bring_over(src: Path, dst_dir: Path) -> Path | None:
    if not src.is_file():
        return None
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    if dst.resolve() == src.resolve():
        return dst
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # same file system: no copy, and the old run can still be deleted
    except OSError:
        shutil.copy2(src, dst)
    return dst


class ResumableModelCheckpoint(ModelCheckpoint):
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        old_dir = state_dict.get("dirpath")
        if not old_dir or not self.dirpath or Path(old_dir).resolve() == Path(self.dirpath).resolve():
            return
        if state_dict.get("monitor") != self.monitor:
            return  # another metric: the stored ranking means nothing here
        here = Path(self.dirpath)
        moved = {}
        for path, score in (state_dict.get("best_k_models") or {}).items():
            dst = _bring_over(Path(path), here)
            if dst is not None:
                moved[str(path)] = (str(dst), score)
        self.best_k_models = {dst: score for dst, score in moved.values()}
        self.best_model_score = state_dict.get("best_model_score")
        self.best_model_path = moved.get(state_dict.get("best_model_path"), ("", None))[0]
        self.kth_best_model_path = moved.get(state_dict.get("kth_best_model_path"), ("", None))[0]
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        log.info("resumed: best so far %s = %s (%s), brought over from %s", self.monitor, self.best_model_score, self.best_model_path, old_dir)
