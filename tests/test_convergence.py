"""Budget-bound training is flagged: networks whose best epoch is their last, tree teachers that
reach their cap (`bench.report.convergence`)."""

from __future__ import annotations

from bench.report.convergence import convergence_summary, training_table
from bench.results.record import Record
from tests.recordkit import make_record


def _student(seed: int, best_epoch: int, epochs: int = 5) -> Record:
    record = make_record("p", "digits", "kd", seed, {"accuracy": 0.9}, modality="image")
    record["training"] = {"best_epoch": best_epoch, "history": {"val_accuracy": [0.5] * epochs}}
    return Record.coerce(record)


def _tree_teacher(seed: int, best: int, cap: int, stopped: bool | None) -> Record:
    record = make_record("p", "wine", "teacher", seed, {"log_loss": 0.1}, role="teacher")
    record["method"]["base"] = "lightgbm"
    record["teacher"] = {"settings": {"n_estimators": cap}, "best_iteration": best, "seed": seed}
    if stopped is not None:
        record["teacher"]["stopped_early"] = stopped
    return Record.coerce(record)


def test_students_ending_on_their_last_epoch_and_teachers_at_their_cap_are_flagged() -> None:
    records = [
        _student(0, best_epoch=4),
        _student(1, best_epoch=2),
        _student(2, best_epoch=4),
        _tree_teacher(0, best=300, cap=300, stopped=None),  # an old record: derived from the cap
        _tree_teacher(1, best=612, cap=2000, stopped=True),
    ]
    table = training_table(records)
    students = table[table.role == "student"].set_index("seed")
    assert students.ends_on_last_epoch.tolist() == [True, False, True]
    teachers = table[table.role == "teacher"].set_index("seed")
    assert teachers.stopped_early.tolist() == [False, True]
    assert teachers.test_log_loss.tolist() == [0.1, 0.1]
    summary = convergence_summary(table).set_index(["dataset", "role"])
    assert summary.loc[("digits", "student"), ["budget_bound", "models"]].tolist() == [2, 3]
    assert summary.loc[("wine", "teacher"), ["budget_bound", "models"]].tolist() == [1, 2]


def test_failed_runs_and_control_rows_are_not_training_rows() -> None:
    failed = make_record("p", "digits", "kd", 0, {}, status="failed", modality="image")
    control = make_record("p", "digits", "random_explainer", 0, {}, role="control")
    assert training_table([Record.coerce(failed), Record.coerce(control)]).empty


def test_soft_label_diagnostics_reach_the_table_and_the_manipulation_check() -> None:
    from bench.report.convergence import manipulation_check

    records = []
    for seed, correlation in enumerate([0.5, 0.7]):
        record = make_record("p", "shapes", "kd", seed, {"accuracy": 0.9}, modality="image")
        record["training"] = {
            "best_epoch": 1,
            "history": {"val_accuracy": [0.5, 0.6, 0.6]},
            "diagnostics": {
                "soft_target_entropy": 2.0 + seed,
                "similarity_correlation": correlation,
            },
        }
        records.append(Record.coerce(record))
    hostile = make_record("p", "shapes", "scratch", 0, {"accuracy": 0.8}, modality="image")
    hostile["training"] = {"best_epoch": 0, "diagnostics": {"similarity_correlation": "high"}}
    records.append(Record.coerce(hostile))
    table = training_table(records)
    assert table.similarity_correlation.tolist()[:2] == [0.5, 0.7]
    check = manipulation_check(table).set_index("method")
    assert list(check.index) == ["kd"]  # a non-number is no measurement
    assert check.loc["kd", "models"] == 2
    assert check.loc["kd", "similarity_correlation_mean"] == 0.6
    assert check.loc["kd", "soft_target_entropy_mean"] == 2.5
