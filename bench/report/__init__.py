"""The report wing: statistics, claims and the static leaderboard site, computed from records
alone (no torch)."""
