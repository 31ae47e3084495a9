"""Offline model metrics of the fraud demo: AUC ROC, average precision and Card Precision@k.

AUC and AP are scikit-learn's; Card Precision@k follows the definition in the fraud-demo note
(Le Borgne et al., chapter 4), written here from that definition. A metric that is undefined
for the data (one class only, no days) is NaN rather than an exception or a warning.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score


def auc_roc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; NaN when ``y_true`` holds a single class."""
    y = np.asarray(y_true)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores)))


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y = np.asarray(y_true)
    if not np.any(y == 1):
        return float("nan")
    return float(average_precision_score(y, np.asarray(scores)))


def card_precision_at_k(
    y_true: ArrayLike, scores: ArrayLike, cards: ArrayLike, days: ArrayLike, k: int = 100
) -> float:
    """Mean over days of the share of true frauds among the day's k highest-scored cards.

    For each day in increasing order: cards detected on earlier days are left out; each
    remaining card gets the max score and the max label of its transactions that day; the k
    highest-scored cards are taken and the day's value is their number of frauds / k (always
    k, even on a day with fewer cards). The frauds among those k become "detected" and are
    left out of later days. Ties in score are broken by ascending card key, so the result is
    deterministic (the note: tie order moves heavily tied models by ~0.003).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    day = np.asarray(days)
    if not (len(y) == len(s) == len(day) == len(np.asarray(cards))):
        raise ValueError("y_true, scores, cards and days must have the same length")
    if len(day) == 0:
        return float("nan")
    # Integer codes in ascending card-key order: cheap to index and to break ties with.
    card_keys, card_code = np.unique(np.asarray(cards), return_inverse=True)
    detected = np.zeros(len(card_keys), dtype=bool)
    per_day: list[float] = []
    for d in np.unique(day):
        rows = (day == d) & ~detected[card_code]
        codes, inverse = np.unique(card_code[rows], return_inverse=True)
        best_score = np.full(len(codes), -np.inf)
        np.maximum.at(best_score, inverse, s[rows])
        is_fraud = np.zeros(len(codes), dtype=bool)
        np.logical_or.at(is_fraud, inverse, y[rows])
        top = np.lexsort((codes, -best_score))[:k]
        per_day.append(float(np.count_nonzero(is_fraud[top])) / k)
        detected[codes[top][is_fraud[top]]] = True
    return float(np.mean(per_day))
