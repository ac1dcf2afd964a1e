"""TF-IDF + logistic regression: the text baseline a practitioner tries first.

Word 1-2-gram TF-IDF with sublinear term frequency over each whole text (not the encoder's
truncated tokens), then scikit-learn's L2 logistic regression, C chosen on the run's validation
texts by log-loss: with a handful of validation texts most Cs tie on accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from transferlab.config.checks import rule
from transferlab.errors import DataError
from transferlab.finetune.strategies.base import ClassicalStrategy, StrategyConfig, register


@dataclass
class TfidfLrConfig(StrategyConfig):
    ngram_max: int = field(default=2, metadata=rule("int", low=1, high=5))
    min_df: int = field(default=1, metadata=rule("int", low=1))
    sublinear_tf: bool = field(default=True, metadata=rule("bool"))
    cs: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0], metadata=rule("float_list", low=0.0, low_open=True))
    max_iter: int = field(default=3000, metadata=rule("int", low=1))


def _texts(arrays, split: str) -> list[str]:
    if getattr(arrays, "texts", None) is None:
        raise DataError(f"strategy=tfidf_lr reads texts, and the {split} split holds "
                        f"{'images' if arrays.field == 'images' else 'token ids only'}: use a text data source, or strategy=pixel_lr for images")
    return arrays.texts


class TfidfLogReg:
    def __init__(self, vectorizer, classifier, num_classes: int, summary: dict):
        self.vectorizer, self.classifier, self.num_classes, self.summary = vectorizer, classifier, num_classes, summary
        self.num_parameters = int(classifier.coef_.size + classifier.intercept_.size)

    def log_proba(self, arrays) -> torch.Tensor:
        proba = self.classifier.predict_proba(self.vectorizer.transform(_texts(arrays, "scored")))
        full = np.full((proba.shape[0], self.num_classes), 1e-12)
        full[:, self.classifier.classes_] = proba  # columns for every class, in class order
        return torch.from_numpy(np.log(np.clip(full, 1e-12, 1.0)))


@register("tfidf_lr")
class TfidfLr(ClassicalStrategy):
    Config = TfidfLrConfig
    modality = "text"

    def fit_classical(self, train, val, num_classes: int) -> TfidfLogReg:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        c = self.config
        t0 = time.perf_counter()
        vectorizer = TfidfVectorizer(ngram_range=(1, c.ngram_max), min_df=c.min_df, sublinear_tf=c.sublinear_tf, strip_accents="unicode")
        x, y = vectorizer.fit_transform(_texts(train, "train")), train.labels.numpy()
        xv, yv = vectorizer.transform(_texts(val, "val")), val.labels.numpy()
        grid, best = [], None
        for C in sorted(c.cs):
            clf = LogisticRegression(C=C, max_iter=c.max_iter).fit(x, y)
            loss = float(log_loss(yv, clf.predict_proba(xv), labels=clf.classes_))
            acc = float((clf.predict(xv) == yv).mean())
            grid.append({"C": C, "val_loss": loss, "val_acc": acc})
            if best is None or loss < best[0]:
                best = (loss, C, clf, acc)
        loss, C, clf, acc = best
        summary = {"solver": "tfidf_lr", "C": C, "val_acc": acc, "grid": grid, "vocabulary": len(vectorizer.vocabulary_),
                   "fit_s": round(time.perf_counter() - t0, 2)}
        return TfidfLogReg(vectorizer, clf, num_classes, summary)
