"""What records already on disk say each kind of work costs: the progress display's priors
(`bench.run.progress.CostModel`).

A student run costs its record's `timings` (training and scoring); a dataset's teacher stage costs
what its reference rows' records took together (the teacher's training, when it was trained, and
the scoring of the teacher and its control rows); the training alone of its `other_teacher`
costs what its teachers' records say their training took. The median over records is the prior of each
(kind, dataset). Records of the results folder itself were written on this machine; where it has
none, the profile's reference set (`reference/<profile>-v<N>` beside the package, when it is
there) says what another machine took, and the display scales it by this machine's pace.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from bench.core.vocabulary import REFERENCE_ROWS, TEACHER_ROW
from bench.results.folder import ResultsFolder
from bench.results.record import Record
from bench.run.progress import Work

REFERENCE_SETS = Path(__file__).resolve().parents[2] / "reference"


def record_seconds(record: Record) -> float:
    """The time a record's run took: its `total`, else the sum of its timed parts."""
    timings = {k: v for k, v in record.timings.items() if v is not None}
    return float(timings["total"]) if "total" in timings else float(sum(timings.values()))


def cost_priors(records: Iterable[Record], datasets: Iterable[str]) -> dict[Work, float]:
    """The median cost of each kind of work on each of `datasets`, from finished records."""
    wanted = set(datasets)
    runs: dict[str, list[float]] = defaultdict(list)
    stages: dict[tuple[str, int], float] = defaultdict(float)
    trainings: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if not record.ok or record.dataset_name not in wanted or not record.timings:
            continue
        if record.row in REFERENCE_ROWS:
            stages[(record.dataset_name, record.seed)] += record_seconds(record)
            if record.row == TEACHER_ROW and record.timings.get("train") is not None:
                trainings[record.dataset_name].append(float(record.timings["train"]))
        else:
            runs[record.dataset_name].append(record_seconds(record))
    teachers: dict[str, list[float]] = defaultdict(list)
    for (dataset, _), seconds in stages.items():
        teachers[dataset].append(seconds)
    priors: dict[Work, float] = {("run", d): statistics.median(s) for d, s in runs.items()}
    priors |= {("teacher", d): statistics.median(s) for d, s in teachers.items()}
    priors |= {("training", d): statistics.median(s) for d, s in trainings.items()}
    return priors


def reference_set(profile: str, root: Path = REFERENCE_SETS) -> Path | None:
    """The newest reference set of `profile` (`<root>/<profile>-v<N>` holding runs of it)."""
    pattern = re.compile(rf"{re.escape(profile)}-v(\d+)")
    found = [
        (int(match.group(1)), folder)
        for folder in (root.iterdir() if root.is_dir() else [])
        if (match := pattern.fullmatch(folder.name)) and profile in ResultsFolder(folder).profiles()
    ]
    return max(found)[1] if found else None


def suite_priors(folder: ResultsFolder, profile: str, datasets: Iterable[str]) -> dict[Work, float]:
    """Priors for a suite of `profile` on `datasets`: from the results folder's own records,
    else from the profile's reference set; empty when neither has any."""
    datasets = list(datasets)
    own = cost_priors(folder.iter_records(profile), datasets)
    if own:
        return own
    reference = reference_set(profile)
    if reference is None:
        return {}
    return cost_priors(ResultsFolder(reference, folder.bounds).iter_records(profile), datasets)
