"""Per-epoch checkpoints (`bench.train.checkpoints`): a training interrupted after an epoch and
resumed in a fresh context computes, bitwise, what an uninterrupted one computes, for every
registered method and for a network teacher; a damaged checkpoint or another run's is discarded;
a finished suite leaves none behind (`tests/test_conformance.py`, on its smoke suite)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.checkpoints import EpochCheckpoints
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import Teacher, obtain_teacher

CPU = torch.device("cpu")
SMOKE = PROFILES.get("smoke")
DATASET_OF = {"tabular": "breast_cancer", "image": "digits"}
# Four epochs whose learning rate falls after the second, resumed at the third: the schedule, the
# optimiser's moments and (on images) the augmentation's generator and the NHWC layout all carry
# over the interruption.
EPOCHS, STOP_AT = 4, 3


class Interrupted(Exception):
    """Stands for the process being killed as an epoch begins."""


def stop_at(epoch: int) -> Callable[[int, int], None]:
    def on_epoch(begun: int, epochs: int) -> None:
        if begun == epoch:
            raise Interrupted

    return on_epoch


def load(dataset: str) -> DatasetBundle:
    return DATASETS.get(dataset).load(DatasetLoaderOptions())


def few(bundle: DatasetBundle) -> DatasetBundle:
    """The first 256 training and 128 validation samples, teacher and students alike: every
    method trains in a second."""
    train, val = bundle.train, bundle.val
    return dataclasses.replace(
        bundle,
        train=dataclasses.replace(train, x=train.x[:256], y=train.y[:256]),
        val=dataclasses.replace(val, x=val.x[:128], y=val.y[:128]),
    )


@pytest.fixture(scope="module")
def smoke_teachers(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Teacher, DatasetBundle]]:
    results = tmp_path_factory.mktemp("teachers")
    teachers = {}
    for modality, dataset in DATASET_OF.items():
        bundle, entry = few(load(dataset)), DATASETS.get(dataset)
        spec = teacher_spec_for(SMOKE, dataset, entry.version, modality, 0)
        folder = ResultsFolder(results).teacher_folder(spec)
        teachers[modality] = (obtain_teacher(spec, bundle, folder, CPU), bundle)
    return teachers


def budget_for(bundle: DatasetBundle):
    budget = SMOKE.budget(bundle.name, bundle.modality)
    training = dataclasses.replace(budget.student_training, epochs=EPOCHS, lr_milestones=(2,))
    if bundle.modality == "image":
        training = dataclasses.replace(training, crop_padding=1, channels_last=True)
    return budget, training


def train(
    method: str,
    teacher: Teacher,
    bundle: DatasetBundle,
    checkpoints: EpochCheckpoints | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[TrainContext, nn.Module]:
    budget, training = budget_for(bundle)
    seed_everything(0)
    ctx = TrainContext(
        bundle,
        teacher,
        training,
        budget.student,
        CPU,
        0,
        on_epoch=on_epoch,
        checkpoints=checkpoints,
    )
    return ctx, METHODS.get(method)().fit(ctx)


def assert_same_training(
    a: tuple[TrainContext, nn.Module], b: tuple[TrainContext, nn.Module]
) -> None:
    (ctx_a, model_a), (ctx_b, model_b) = a, b
    assert (ctx_a.best_epoch, ctx_a.last_epoch_test_accuracy) == (
        ctx_b.best_epoch,
        ctx_b.last_epoch_test_accuracy,
    )
    assert json.dumps(ctx_a.history) == json.dumps(ctx_b.history)
    assert json.dumps(ctx_a.diagnostics) == json.dumps(ctx_b.diagnostics)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key, value in state_a.items():
        torch.testing.assert_close(state_b[key], value, rtol=0, atol=0, msg=key)


PAIRS = [
    (modality, name)
    for name in METHODS.names()
    for modality in DATASET_OF
    if modality in METHODS.get(name).modalities
]


@pytest.mark.parametrize(("modality", "method"), PAIRS)
def test_a_resumed_run_computes_what_an_uninterrupted_one_does(
    tmp_path: Path, smoke_teachers: dict, modality: str, method: str
) -> None:
    teacher, bundle = smoke_teachers[modality]
    whole = train(method, teacher, bundle)
    folder = tmp_path / "cache" / "checkpoints" / "run"
    with pytest.raises(Interrupted):
        train(
            method,
            teacher,
            bundle,
            EpochCheckpoints(folder, "run", tmp_path, every_seconds=0),
            stop_at(STOP_AT),
        )
    assert (folder / "fit0.pt").is_file()
    resumed = train(
        method, teacher, bundle, EpochCheckpoints(folder, "run", tmp_path, every_seconds=0)
    )
    assert resumed[0].resumed_at_epoch == STOP_AT - 1 and resumed[0].seconds_before_resuming > 0
    assert_same_training(whole, resumed)


def test_a_teacher_resumes_its_training_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    bundle, entry = load("digits"), DATASETS.get("digits")
    spec = teacher_spec_for(SMOKE, "digits", entry.version, "image", 1)
    folder = ResultsFolder(tmp_path)
    whole = obtain_teacher(spec, bundle, folder.teacher_folder(spec), CPU, root=tmp_path)

    other = ResultsFolder(tmp_path / "other")
    other.root.mkdir()
    kept = other.teacher_checkpoints(spec)
    checkpoints = lambda: EpochCheckpoints(kept, spec.key, other.root, every_seconds=0)  # noqa: E731
    with pytest.raises(Interrupted):
        obtain_teacher(
            spec, bundle, other.teacher_folder(spec), CPU, stop_at(2), other.root, checkpoints()
        )
    assert (kept / "fit0.pt").is_file()
    resumed = obtain_teacher(
        spec, bundle, other.teacher_folder(spec), CPU, None, other.root, checkpoints()
    )
    assert not kept.exists()
    assert resumed.info["resumed_at_epoch"] == 1 and "resumed_at_epoch" not in whole.info
    assert resumed.info["train_seconds"] > resumed.info["seconds_before_resuming"] > 0
    assert resumed.info["best_epoch"] == whole.info["best_epoch"]
    assert json.dumps(resumed.info["history"]) == json.dumps(whole.info["history"])
    for key, value in whole.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("damage", ["flipped byte", "another run's", "another device's"])
def test_a_damaged_or_foreign_checkpoint_is_discarded_and_training_starts_afresh(
    tmp_path: Path, smoke_teachers: dict, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    teacher, bundle = smoke_teachers["tabular"]
    folder = tmp_path / "ck"
    key = "another run" if damage == "another run's" else "run"
    with pytest.raises(Interrupted):
        train(
            "kd",
            teacher,
            bundle,
            EpochCheckpoints(folder, key, tmp_path, every_seconds=0),
            stop_at(STOP_AT),
        )
    if damage == "flipped byte":
        data = bytearray((folder / "fit0.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "fit0.pt").write_bytes(bytes(data))
    if damage == "another device's":
        store = EpochCheckpoints(folder, "run", tmp_path)
        state = store.load(folder / "fit0.pt", CPU)
        assert state is not None
        store.save(folder / "fit0.pt", state, torch.device("meta"))
    with caplog.at_level(logging.WARNING):
        resumed = train(
            "kd", teacher, bundle, EpochCheckpoints(folder, "run", tmp_path, every_seconds=0)
        )
    assert resumed[0].resumed_at_epoch is None
    assert "discarding checkpoint" in caplog.text
    assert_same_training(train("kd", teacher, bundle), resumed)


def test_a_checkpoint_is_due_only_once_its_interval_has_passed(tmp_path: Path) -> None:
    """A save costs two fsyncs: runs of short epochs (a table's) keep none; 0 keeps every epoch."""
    assert not EpochCheckpoints(tmp_path / "a", "run", tmp_path).due()
    every_epoch = EpochCheckpoints(tmp_path / "b", "run", tmp_path, every_seconds=0)
    assert every_epoch.due() and every_epoch.due()


def test_a_checkpoint_that_cannot_be_written_costs_a_warning_not_the_run(
    tmp_path: Path, smoke_teachers: dict, caplog: pytest.LogCaptureFixture
) -> None:
    teacher, bundle = smoke_teachers["tabular"]
    (tmp_path / "cache").write_text("a file where the checkpoints' folder would go\n")
    store = EpochCheckpoints(tmp_path / "cache" / "run", "run", tmp_path, every_seconds=0)
    with caplog.at_level(logging.WARNING):
        written_off = train("kd", teacher, bundle, store)
    assert "could not keep checkpoint" in caplog.text
    assert_same_training(train("kd", teacher, bundle), written_off)


def test_clearing_follows_no_link_out_of_the_results_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "run").mkdir(parents=True)
    (outside / "run" / "precious").write_text("kept\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "cache").symlink_to(outside, target_is_directory=True)
    EpochCheckpoints(results / "cache" / "run", "run", results).clear()
    assert (outside / "run" / "precious").read_text() == "kept\n"
