"""ok / warn / alert from statistics and thresholds (pure); see README "Drift" for the why.

Effect sizes decide: PSI, Jensen-Shannon, normed Wasserstein, shares of missing, out-of-range
and new-category values. A test's p-value only gates its own effect size (KS statistic,
chi-square via JS): on windows of thousands of rows a p-value alone flags shifts too small to
matter, and an effect size alone on a tiny window is noise.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.drift.config import Thresholds

OK, WARN, ALERT = 0, 1, 2
NAMES = ("ok", "warn", "alert")


def level(value: float | None, warn: float, alert: float) -> int:
    if value is None:
        return OK
    return ALERT if value >= alert else WARN if value >= warn else OK


def numeric_status(s: Mapping[str, float | None], t: Thresholds) -> tuple[int, list[str]]:
    """Status of a numeric column and the statistics that set it."""
    ks_effect = s["ks_statistic"] if (s["ks_p_value"] or 1.0) < t.p_value else None
    checks = {
        "psi": level(s["psi"], t.psi_warn, t.psi_alert),
        "ks": level(ks_effect, t.ks_warn, t.ks_alert),
        "js": level(s["js_distance"], t.distance_warn, t.distance_alert),
        "wasserstein": level(s["wasserstein_normed"], t.distance_warn, t.distance_alert),
        **_common(s, t),
        "out_of_range": level(s["out_of_range_rate"], t.out_of_range_warn, t.out_of_range_alert),
    }
    return _worst(checks)


def categorical_status(s: Mapping[str, float | None], t: Thresholds) -> tuple[int, list[str]]:
    """Status of a categorical column and the statistics that set it."""
    js_effect = s["js_distance"] if (s["chi_square_p_value"] or 1.0) < t.p_value else None
    checks = {
        "js": level(js_effect, t.distance_warn, t.distance_alert),
        "new_category": level(s["new_category_share"], t.new_category_warn, t.new_category_alert),
        **_common(s, t),
    }
    return _worst(checks)


def _common(s: Mapping[str, float | None], t: Thresholds) -> dict[str, int]:
    rate, ref = s["missing_rate"], s["reference_missing_rate"]
    increase = None if rate is None else rate - (ref or 0.0)
    return {"missing": level(increase, t.missing_warn, t.missing_alert)}


def label_status(ratio: float | None, p_value: float, t: Thresholds) -> int:
    """A label rate that moved by a factor of warn/alert (either way), significantly."""
    if ratio is None or p_value >= t.p_value:
        return OK
    factor = max(ratio, 1.0 / ratio) if ratio > 0 else float("inf")
    return level(factor, t.label_ratio_warn, t.label_ratio_alert)


def overall_status(
    feature_levels: list[int], other_levels: list[int], dead_letter_level: int, t: Thresholds
) -> tuple[int, float]:
    """Alert when a share of the features (or the input's schema) is in alert; warn on any."""
    share = (
        sum(1 for x in feature_levels if x == ALERT) / len(feature_levels)
        if feature_levels
        else 0.0
    )
    if share >= t.share_alert or dead_letter_level == ALERT:
        return ALERT, share
    if any(x > OK for x in [*feature_levels, *other_levels, dead_letter_level]):
        return WARN, share
    return OK, share


def _worst(checks: Mapping[str, int]) -> tuple[int, list[str]]:
    worst = max(checks.values(), default=OK)
    return worst, [name for name, x in checks.items() if x == worst and worst > OK]
