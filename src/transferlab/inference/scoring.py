"""Image files to class probabilities, through the run's eval preprocessing and any scorer: the
trained network in torch, or an exported ONNX file through onnxruntime."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from transferlab.data.images.decode import decode_files
from transferlab.data.images.transforms import BatchPreprocess
from transferlab.inference.inputs import InputFile

log = logging.getLogger(__name__)

Scorer = Callable[[torch.Tensor], np.ndarray]  # normalised float images [B, C, H, W] -> logits [B, K]


def torch_scorer(network: torch.nn.Module) -> Scorer:
    network.eval()

    @torch.inference_mode()
    def score(images: torch.Tensor) -> np.ndarray:
        return network(images).float().numpy()

    return score


def onnx_scorer(path: str | Path, threads: int | None = None) -> Scorer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def score(images: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: images.numpy()})[0]

    return score


@dataclass
class Predictions:
    files: list[InputFile]
    classes: list[str]
    logits: np.ndarray  # float [N, K]; NaN rows for files that could not be read
    errors: list[str | None]
    top_k: int = 3
    skipped: dict = field(default_factory=dict)

    @property
    def probabilities(self) -> np.ndarray:
        probs = np.full_like(self.logits, np.nan)
        ok = np.isfinite(self.logits).all(1)
        z = self.logits[ok] - self.logits[ok].max(1, keepdims=True)
        e = np.exp(z)
        probs[ok] = e / e.sum(1, keepdims=True)
        return probs

    @property
    def labelled(self) -> np.ndarray:
        """Rows with a true label among the model's classes and a prediction."""
        known = set(self.classes)
        return np.array([f.label in known and err is None for f, err in zip(self.files, self.errors)], dtype=bool)

    def accuracy(self) -> float | None:
        rows = self.labelled
        if not rows.any():
            return None
        index = {c: i for i, c in enumerate(self.classes)}
        truth = np.array([index[f.label] for f, ok in zip(self.files, rows) if ok])
        return float((self.logits[rows].argmax(1) == truth).mean())

    def rows(self) -> list[dict]:
        k = min(self.top_k, len(self.classes))
        probs = self.probabilities
        has_labels = any(f.label is not None for f in self.files)
        out = []
        for i, (f, err) in enumerate(zip(self.files, self.errors)):
            row = {"input": f.name}
            if has_labels:
                row["label"] = f.label if f.label is not None else ""
            if err is None:
                order = np.argsort(-probs[i], kind="stable")[:k]
                for rank, j in enumerate(order, 1):
                    row[f"pred_{rank}"] = self.classes[j]
                    row[f"prob_{rank}"] = f"{probs[i, j]:.6f}"
                if has_labels:
                    row["correct"] = "" if f.label not in self.classes else int(self.classes[order[0]] == f.label)
            else:
                for rank in range(1, k + 1):
                    row[f"pred_{rank}"] = row[f"prob_{rank}"] = ""
                if has_labels:
                    row["correct"] = ""
            row["error"] = err or ""
            out.append(row)
        return out


def predict_files(
    files: list[InputFile],
    scorer: Scorer,
    preprocess: dict,
    storage_size: int,
    classes: list[str],
    batch_size: int = 64,
    top_k: int = 3,
    max_pixels: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Decode each file as the run's data source stores images, transform as its eval path does,
    score. A file that fails is a row with its error; the others are unaffected."""
    transform = BatchPreprocess(**preprocess)
    logits = np.full((len(files), len(classes)), np.nan, dtype=np.float32)
    errors: list[str | None] = [f.problem for f in files]
    readable = [i for i, f in enumerate(files) if f.problem is None]
    bar = _progress(len(readable), progress)
    for start in range(0, len(readable), batch_size):
        chunk = readable[start : start + batch_size]
        row_of = {files[i].path: i for i in chunk}
        decoded = decode_files(list(row_of), storage_size, max_pixels)
        for path, why in decoded.unreadable + decoded.too_large:
            errors[row_of[path]] = f"cannot read image: {why}"
        ok = [j for j in range(len(chunk)) if decoded.ok[j]]
        if ok:
            images = transform(torch.from_numpy(decoded.images[ok]))
            logits[[chunk[j] for j in ok]] = scorer(images)
        bar.update(len(chunk))
    bar.close()
    failed = sum(e is not None for e in errors)
    if failed:
        log.warning("%d of %d inputs could not be predicted (marked in the error column), e.g. %s: %s",
                    failed, len(files), next(f.name for f, e in zip(files, errors) if e), next(e for e in errors if e))
    return Predictions(files, classes, logits, errors, top_k=top_k)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="img", disable=not enabled or total == 0, file=sys.stderr, leave=False)
