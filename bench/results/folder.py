"""The results folder: the one owner of its layout, and the one reader and writer of its records.

    <results>/runs/<profile>/<dataset>/<row>/seed<k>.json         a run's record (`Record`)
    <results>/runs/<profile>/<dataset>/<row>/seed<k>.json.lock    the run's lock
    <results>/runs/<profile>/<dataset>/<row>/seed<k>.maps.npy     its attribution maps (images)
    <results>/runs/<profile>/<dataset>/teacher/seed<t>.inputs.npy the images those maps explain
    <results>/cache/teachers/<dataset>/<key>/                     a trained teacher (sealed)
    <results>/cache/teachers/<dataset>/<key>.lock                 the teacher's lock
    <results>/metaquantus.csv                                     MetaQuantus's tests of the metrics

A row is a method variant or one of a teacher's reference rows (`bench.core.vocabulary`), and a
reference row's seed is its teacher's seed. Every path is built from checked names
(`bench.core.paths.inside`), so it stays in the folder by construction. The report writes
nothing here: its site and exports go where `--out` says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.core.atomic import write_json_atomic
from bench.core.locks import lock_path
from bench.core.paths import inside
from bench.core.specs import RunSpec, TeacherSpec
from bench.core.vocabulary import TEACHER_ROW
from bench.results.record import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultsFolder:
    """Where everything of one results folder lives, and its records read and written."""

    root: Path

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
        write_json_atomic(path, record.to_json())
        return path

    def iter_records(self, profile: str | None = None) -> Iterator[Record]:
        """Every readable record under `runs/` (of one profile, if given), in path order."""
        root = self.runs / profile if profile else self.runs
        for path in sorted(root.rglob("*.json")):
            record = read_record(path)
            if record is not None:
                yield record


def read_record(path: Path) -> Record | None:
    """The record at `path`, or None (with a warning) when it is missing, unreadable or corrupt.

    A corrupt record counts as not done: `run` redoes it, `report` and `status` skip it.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("skipping unreadable record %s: %s", path, exc)
        return None
    try:
        return Record.from_json(data)
    except ValueError as exc:
        log.warning("skipping corrupt record %s: %s", path, exc)
        return None
