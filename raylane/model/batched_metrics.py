"""The holdout metrics of a model over a table read in batches: each batch adds to fixed-size
accumulators (score histograms, counts, sums), merged across batches and workers.

AUC comes from per-class histograms of the positive-class score on :data:`AUC_BINS` equal bins
of [0, 1]: pairs in different bins are ordered exactly, pairs in one bin count half, as tied
scores do in the exact AUC. The error is at most half the share of positive-negative pairs that
share a bin (:meth:`Accumulator.auc_error_bound`), reported with the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AUC_BINS = 1 << 16
_EPS = float(np.finfo(np.float64).eps)


@dataclass
class Accumulator:
    """Sums over batches of (y, model output): classification ``y`` are class indices and the
    output probabilities ``[n, K]``; regression ``y`` and output are floats."""

    task: str
    classes: int = 0
    rows: int = 0
    pos_hist: np.ndarray | None = None  # binary: positive-class score histogram of positives
    neg_hist: np.ndarray | None = None
    log_loss_sum: float = 0.0
    correct: int = 0
    confusion: np.ndarray | None = None  # [true, predicted] counts
    sums: dict[str, float] = field(default_factory=dict)  # regression

    def add(self, y: np.ndarray, output: np.ndarray, pos_index: int | None = None) -> None:
        y = np.asarray(y)
        self.rows += len(y)
        if self.task == "regression":
            pred = np.asarray(output, dtype=np.float64).reshape(-1)
            err = pred - y
            for key, value in (("se", np.sum(err**2)), ("ae", np.sum(np.abs(err))),
                               ("y", np.sum(y)), ("yy", np.sum(np.asarray(y, float) ** 2))):
                self.sums[key] = self.sums.get(key, 0.0) + float(value)
            return
        proba = np.asarray(output, dtype=np.float64)
        k = proba.shape[1]
        self.classes = k
        y = y.astype(np.int64)
        clipped = np.clip(proba[np.arange(len(y)), y], _EPS, 1.0 - _EPS)  # as sklearn clips
        self.log_loss_sum += float(-np.log(clipped).sum())
        labels = proba.argmax(axis=1)
        self.correct += int((labels == y).sum())
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (y, labels), 1)
        self.confusion = confusion if self.confusion is None else self.confusion + confusion
        if k == 2:
            pos = 1 if pos_index is None else pos_index
            score = proba[:, 1]  # AUC ranks by class 1's score, as sklearn's roc_auc_score does
            index = np.clip((score * AUC_BINS).astype(np.int64), 0, AUC_BINS - 1)
            is_one = y == 1
            pos_hist = np.bincount(index[is_one], minlength=AUC_BINS)
            neg_hist = np.bincount(index[~is_one], minlength=AUC_BINS)
            self.pos_hist = pos_hist if self.pos_hist is None else self.pos_hist + pos_hist
            self.neg_hist = neg_hist if self.neg_hist is None else self.neg_hist + neg_hist
            self.sums["pos_index"] = pos

    def merge(self, other: Accumulator) -> Accumulator:
        if not self.rows:
            return other
        if not other.rows:
            return self
        out = Accumulator(self.task, max(self.classes, other.classes), self.rows + other.rows)
        for name in ("pos_hist", "neg_hist", "confusion"):
            a, b = getattr(self, name), getattr(other, name)
            setattr(out, name, a if b is None else b if a is None else a + b)
        out.log_loss_sum = self.log_loss_sum + other.log_loss_sum
        out.correct = self.correct + other.correct
        out.sums = {k: self.sums.get(k, 0.0) + other.sums.get(k, 0.0)
                    for k in {*self.sums, *other.sums} if k != "pos_index"}
        if "pos_index" in self.sums:
            out.sums["pos_index"] = self.sums["pos_index"]
        return out

    def auc(self) -> float | None:
        if self.pos_hist is None or self.neg_hist is None:
            return None
        positives, negatives = self.pos_hist.sum(), self.neg_hist.sum()
        if not positives or not negatives:
            return None
        below = np.cumsum(self.neg_hist) - self.neg_hist
        wins = np.sum(self.pos_hist * (below + 0.5 * self.neg_hist))
        return float(wins / (positives * negatives))

    def auc_error_bound(self) -> float:
        """Most the histogram AUC can differ from the exact one."""
        if self.pos_hist is None or self.neg_hist is None:
            return 0.0
        pairs = self.pos_hist.sum() * self.neg_hist.sum()
        return float(np.sum(self.pos_hist * self.neg_hist) / 2 / pairs) if pairs else 0.0

    def metrics(self) -> dict[str, float]:
        """The task's metrics (raylane.model.metrics names), those computable here."""
        if not self.rows:
            return {}
        if self.task == "regression":
            n, s = self.rows, self.sums
            sst = s["yy"] - s["y"] ** 2 / n
            out = {"rmse": float(np.sqrt(s["se"] / n)), "mae": s["ae"] / n}
            if sst > 0:
                out["r2"] = 1.0 - s["se"] / sst
            return out
        out = {"accuracy": self.correct / self.rows, "log_loss": self.log_loss_sum / self.rows}
        auc = self.auc()
        if auc is not None:
            out["roc_auc"] = auc
        if self.confusion is not None:
            if self.classes == 2:
                p = int(self.sums.get("pos_index", 1))
                tp = self.confusion[p, p]
                fp = self.confusion[:, p].sum() - tp
                fn = self.confusion[p, :].sum() - tp
                out["f1"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
            else:
                f1s = []
                for c in range(self.classes):
                    tp = self.confusion[c, c]
                    fp, fn = self.confusion[:, c].sum() - tp, self.confusion[c, :].sum() - tp
                    f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
                out["f1"] = float(np.mean(f1s))
        return out
