"""The outcome join: predictions meet the outcomes that label them, later, in event time."""
