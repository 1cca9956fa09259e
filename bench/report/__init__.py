"""The report wing: statistics, claims and the static leaderboard site with its exports, computed
from records alone (`compute`), then written (`render`); no torch unless an old record needs the
catalogue to describe its method."""
