"""xkd-bench: does a distilled student predict as well as its teacher, and for the same reasons?"""

__version__ = "0.1.0"

# Bumped whenever the meaning of a record's fields changes: it is part of every run id, so a
# schema change redoes runs instead of mixing old and new records on one leaderboard.
SCHEMA_VERSION = 1
