"""The run wing: which runs are finished, the suite loop, the executors that run its stages, the
stages themselves, progress and provenance."""
