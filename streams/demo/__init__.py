"""The card-fraud demo: its pipeline file and the transaction simulator."""
