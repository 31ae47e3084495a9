"""`rtscore backtest`: score listed model versions over a past range of the topics, offline,
and report their metrics side by side (HTML with inline SVG, and JSON)."""
