"""Online model performance: labeled predictions per event-time window, per model version."""
