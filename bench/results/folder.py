"""The results folder: the one owner of its layout, and the one reader and writer of its records.

    <results>/runs/<profile>/<dataset>/<row>/seed<k>.json         a run's record (`Record`)
    <results>/runs/<profile>/<dataset>/<row>/seed<k>.json.lock    the run's lock
    <results>/runs/<profile>/<dataset>/<row>/seed<k>.maps.npy     its attribution maps (images)
    <results>/runs/<profile>/<dataset>/teacher/seed<t>.inputs.npy the images those maps explain
    <results>/cache/teachers/<dataset>/<key>/                     a trained teacher (sealed)
    <results>/cache/teachers/<dataset>/<key>.lock                 the teacher's lock
    <results>/cache/checkpoints/<profile>/<run id>/fit<i>.pt     an unfinished run's training state
    <results>/cache/checkpoints/teachers/<key>/fit0.pt            an unfinished teacher's
    <results>/metaquantus.csv                                     MetaQuantus's tests of the metrics

A row is a method variant or one of a teacher's reference rows (`bench.core.vocabulary`), and a
reference row's seed is its teacher's seed. Every path is built from checked names
(`bench.core.paths.inside`), and records are read, written and found without following a link
below the root (`bench.core.confined`), so neither a name nor a link leads out of the folder. The
report writes nothing here: its site and exports go where `--out` says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.atomic import write_json_atomic
from bench.core.confined import RECORD_CAP, NotRegular, read_regular, walk_files
from bench.core.jsontext import parse_json
from bench.core.locks import lock_path
from bench.core.paths import check_name, inside
from bench.core.specs import RunSpec, TeacherSpec
from bench.core.vocabulary import TEACHER_ROW
from bench.results.record import MetricBounds, Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultsFolder:
    """Where everything of one results folder lives, and its records read and written.

    `bounds`: each metric's declared bounds (`Catalogue.metric_bounds`), against which every
    record read is checked; without them only the bound all metrics share is.
    """

    root: Path
    bounds: MetricBounds = field(default_factory=dict, compare=False, hash=False)

    # --- layout ---------------------------------------------------------------------------------
    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def has_runs(self) -> bool:
        return self.runs.is_dir()

    def profiles(self) -> list[str]:
        """The profiles that have a folder of runs, by name."""
        return sorted(p.name for p in self.runs.iterdir() if p.is_dir()) if self.has_runs() else []

    def record_path(self, profile: str, dataset: str, row: str, seed: int) -> Path:
        """`runs/<profile>/<dataset>/<row>/seed<k>.json`; every name checked safe."""
        return inside(self.root, "runs", profile, dataset, row, f"seed{seed}.json")

    def run_path(self, spec: RunSpec) -> Path:
        return self.record_path(spec.profile, spec.dataset, spec.variant, spec.seed)

    def reference_path(self, profile: str, spec: TeacherSpec, row: str = TEACHER_ROW) -> Path:
        """The record of one of a teacher's reference rows (the teacher or a control row)."""
        return self.record_path(profile, spec.dataset, row, spec.seed)

    def path_of(self, record: Record) -> Path:
        """Where `record` belongs."""
        return self.record_path(record.profile, record.dataset_name, record.row, record.seed)

    @staticmethod
    def maps_path(record_file: Path) -> Path:
        """The attribution maps kept beside a record (`seed<k>.maps.npy`)."""
        return record_file.with_suffix(".maps.npy")

    @staticmethod
    def inputs_path(record_file: Path) -> Path:
        """The images a teacher's maps explain, beside its record (`seed<k>.inputs.npy`)."""
        return record_file.with_suffix(".inputs.npy")

    def beside(self, record: Record, name: object) -> Path | None:
        """A file a record names (`attribution_maps.file`), in the record's folder; None when the
        name is not a plain file name there (a record is untrusted: `../x` stays out)."""
        if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."}:
            return None
        return self.path_of(record).parent / name

    def teacher_folder(self, spec: TeacherSpec) -> Path:
        """`cache/teachers/<dataset>/<key>`: the trained teacher, sealed."""
        return inside(self.root, "cache", "teachers", spec.dataset, spec.key)

    def run_checkpoints(self, spec: RunSpec) -> Path:
        """`cache/checkpoints/<profile>/<run id>`: a run's training state while it is unfinished
        (`bench.train.checkpoints`). Run ids do not name the profile, whose run lock guards the
        folder: two profiles of equal budgets must not share it."""
        return inside(self.root, "cache", "checkpoints", spec.profile, spec.run_id)

    def teacher_checkpoints(self, spec: TeacherSpec) -> Path:
        """`cache/checkpoints/teachers/<key>`: a network teacher's training state while it is
        unfinished, guarded by the teacher's lock as its cache folder is."""
        return inside(self.root, "cache", "checkpoints", "teachers", spec.key)

    @property
    def metaquantus_file(self) -> Path:
        """`metaquantus.csv`: the noise-resilience and adversarial-reactivity tests of the Quantus
        metrics (`bench.run.metaquantus`), which the report's reliability checks read."""
        return self.root / "metaquantus.csv"

    @staticmethod
    def lock_of(path: Path) -> Path:
        """The lock file that guards a record or a teacher folder."""
        return lock_path(path)

    # --- records --------------------------------------------------------------------------------
    def write(self, record: Record) -> Path:
        """Write `record` atomically where it belongs; returns the path."""
        path = self.path_of(record)
        write_json_atomic(path, record.to_json(), self.root)
        return path

    def read(self, path: Path) -> Record | None:
        """The record at `path` in this folder (`read_record`), if it is the record of the run
        that path belongs to; a copy or a misfiled record counts only at its own path."""
        record = read_record(path, self.root, self.bounds)
        if record is not None and self.path_of(record) != path:
            log.warning("skipping %s: it holds the record of %s", path, self.path_of(record))
            return None
        return record

    def iter_records(self, profile: str | None = None) -> Iterator[Record]:
        """Every readable record under `runs/` (of one profile, if given), in path order; a link
        on the way is refused (`bench.core.confined.RefusedPath`), never silently skipped.

        A record is one run: a record found away from its own path (`cp -a kd kd.bak`, a
        misfiled or edited record) is not counted again. Where it holds the same run (run id)
        as the record at its own path but other values, the two conflict and neither counts,
        with a warning naming both; an older run's copy is skipped.
        """
        parts = ("runs", check_name(profile, "profile")) if profile else ("runs",)
        at_home: dict[Path, Record] = {}
        away: list[tuple[Path, Record]] = []
        for path in walk_files(self.root, parts, ".json"):
            record = read_record(path, self.root, self.bounds)
            if record is not None:
                home = self.path_of(record)
                if home == path:
                    at_home[path] = record
                else:
                    away.append((path, record))
        conflicts = set()
        for path, record in away:
            home = self.path_of(record)
            if home not in at_home:
                log.warning("skipping %s: it holds the record of %s", path, home)
            elif at_home[home].run_id != record.run_id:
                log.info("skipping %s: an older record of %s (another run id)", path, home)
            elif at_home[home].to_json() == record.to_json():
                log.info("%s is a copy of %s: counted once", path, home)
            else:
                conflicts.add(home)
                log.warning("%s and %s hold different records of one run: neither counts",
                            home, path)  # fmt: skip
        yield from (record for path, record in at_home.items() if path not in conflicts)


def read_record(
    path: Path, root: Path | None = None, bounds: MetricBounds | None = None
) -> Record | None:
    """The record at `path`, or None (with a warning) when it is missing, unreadable or corrupt
    (its metrics checked against `bounds`, `bench.results.record.record_problems`).

    Below `root` (default: the record's folder) no link is followed, and only a regular file of
    at most `RECORD_CAP` bytes is read (`bench.core.confined`): a link leading elsewhere is
    refused with an error; a FIFO, a device or an oversized file is skipped with a warning. A
    corrupt record counts as not done: `run` redoes it, `report` and `status` skip it.
    """
    try:
        data = parse_json(read_regular(path, RECORD_CAP, root))
    except FileNotFoundError:
        return None
    except NotRegular as exc:
        _warn_once(path, f"skipping {exc}")
        return None
    except (OSError, ValueError, RecursionError) as exc:
        _warn_once(path, f"skipping unreadable record {path}: {exc}")
        return None
    try:
        return Record.from_json(data, bounds)
    except ValueError as exc:
        _warn_once(path, f"skipping corrupt record {path}: {exc}")
        return None


# What this process has warned of, by file and message: a command reads a record more than once
# (`run` decides what is done, then its runner does, under the folder's absolute path), and one
# damaged record is one warning.
_warned: set[tuple[str, str]] = set()


def _warn_once(path: Path, message: str) -> None:
    key = (os.path.abspath(path), message.replace(str(path), ""))
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)
