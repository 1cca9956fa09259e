"""`cifar100`, read from tiny files in the real format, and its per-channel normalisation.

The files are laid out as the python version's (Python-2-era pickles, protocol 2, bytes keys:
`train` and `test` with `data`, `fine_labels`, `coarse_labels`, `filenames`, `batch_label`;
`meta` with `fine_label_names` and `coarse_label_names`). As in `test_image_datasets`, whose
writers and local server this file reuses, the cache folder is an empty temporary folder and
downloads go to a closed local port unless a test serves the archive itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError, DatasetUnavailable
from bench.data.bundle import DATASETS, DatasetBundle
from bench.data.downloads import CACHE_ENV, RemoteFile
from bench.datasets import cifar100
from tests.test_image_datasets import (
    RunsACommand,
    Server,
    assert_same_splits,
    closed_port_url,
    labelled_images,
    load,
    pickle_file,
    rows,
    server,  # noqa: F401 (a fixture, requested by name below)
    write_archive,
)

CLASSES, COARSE = 100, 20
# The smallest training file whose stratified tenth holds every class: 10 images a class.
N_TRAIN, N_TEST = 1000, 200
FINE_NAMES = tuple(f"fine class {i:02d}" for i in range(CLASSES))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder and a download that fails at once; returns the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    archive = cifar100.ARCHIVE
    dead = RemoteFile(archive.name, (closed_port_url() + archive.name,), archive.md5)
    monkeypatch.setattr(cifar100, "ARCHIVE", dead)
    return cache


@dataclass(frozen=True)
class Written:
    """What `write_cifar100` wrote: uint8 images (N, 3, 32, 32) and fine labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def images_of(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced fine labels, first pixel = label; the channels spread differently (red 0-255,
    green 0-127, blue 100-255), so one statistic for all channels would be caught."""
    images, labels = labelled_images(n, (3, 32, 32), seed, classes=CLASSES)
    images[:, 1] //= 2
    images[:, 2] = 100 + images[:, 2] % 156
    return images, labels


def write_cifar100(folder: Path) -> Written:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for seed, (name, n) in enumerate(((cifar100.TRAIN, N_TRAIN), (cifar100.TEST, N_TEST))):
        images, labels = images_of(n, seed=30 + seed)
        arrays[name] = images, labels
        batch = {  # the original's key order
            b"filenames": [f"image_{seed}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch 1 of 1".encode(),
            b"fine_labels": labels.tolist(),
            # Superclasses that disagree with the fine labels, so using them would show.
            b"coarse_labels": ((labels.astype(int) + 7) % COARSE).tolist(),
            b"data": images.reshape(n, 3 * 32 * 32),
        }
        pickle_file(folder / name, batch)
    meta = {
        b"fine_label_names": [name.encode() for name in FINE_NAMES],
        b"coarse_label_names": [f"superclass {i}".encode() for i in range(COARSE)],
    }
    pickle_file(folder / cifar100.META, meta)
    return Written(*arrays[cifar100.TRAIN], *arrays[cifar100.TEST])


def raw(bundle: DatasetBundle, split: str) -> np.ndarray:
    """A split's images back as uint8, undoing the normalisation with the stored statistics."""
    statistics = bundle.extras["normalisation"]
    mean = np.array(statistics["mean"])[:, None, None]
    std = np.array(statistics["std"])[:, None, None]
    pixels = (getattr(bundle, split).x * std + mean) * 255
    assert np.abs(pixels - np.rint(pixels)).max() < 1e-3  # exactly the written values
    return np.rint(pixels).astype(np.uint8)


def by_hand(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], in float64."""
    scaled = images.astype(np.float64) / 255
    return scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))


def test_cifar100_is_registered_without_reading_files() -> None:
    entry = DATASETS.get("cifar100")
    assert (entry.name, entry.version, entry.modality) == ("cifar100", "official-1", "image")
    assert "standardised per channel" in entry.description


@pytest.mark.parametrize("subfolder", ["", "cifar-100-python"])
def test_cifar100_reads_fine_labels_and_their_names(tmp_path: Path, subfolder: str) -> None:
    written = write_cifar100(tmp_path / "data" / subfolder)
    bundle = load("cifar100", tmp_path / "data")
    assert (bundle.name, bundle.version, bundle.modality) == ("cifar100", "official-1", "image")
    assert bundle.class_names == FINE_NAMES  # meta's fine_label_names, not the superclasses
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.sizes() == {"train": 900, "val": 100, "test": N_TEST}
    assert bundle.extras["source"] == str(tmp_path / "data" / subfolder)
    # The official test file, in order, with its fine labels; pairs kept in every split.
    np.testing.assert_array_equal(raw(bundle, "test"), written.test_images)
    np.testing.assert_array_equal(bundle.test.y, written.test_labels)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(raw(bundle, split)[:, 0, 0, 0], getattr(bundle, split).y)
    assert bundle.train.y.max() == CLASSES - 1  # fine labels reach 99; coarse ones stop at 19
    train_and_val = np.concatenate([raw(bundle, "train"), raw(bundle, "val")])
    assert rows(train_and_val) == rows(written.train_images)
    np.testing.assert_array_equal(np.bincount(bundle.val.y, minlength=CLASSES), 1)  # stratified
    assert_same_splits(bundle, load("cifar100", tmp_path / "data"))


def test_each_channel_is_standardised_by_the_train_split_alone(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    bundle = load("cifar100", tmp_path)
    statistics = bundle.extras["normalisation"]
    assert json.loads(json.dumps(statistics)) == statistics  # plain floats, JSON-able
    assert all(len(statistics[key]) == 3 for key in ("mean", "std"))
    assert all(type(value) is float for key in ("mean", "std") for value in statistics[key])
    # The train split: mean 0, std 1 in every channel.
    np.testing.assert_allclose(bundle.train.x.mean(axis=(0, 2, 3), dtype=np.float64), 0, atol=1e-6)
    np.testing.assert_allclose(bundle.train.x.std(axis=(0, 2, 3), dtype=np.float64), 1, atol=1e-6)
    # The statistics by hand: the written training images less those of the val split.
    val_rows = set(rows(raw(bundle, "val")))
    assert val_rows <= set(rows(written.train_images))
    in_train = np.array([image.tobytes() not in val_rows for image in written.train_images])
    assert in_train.sum() == len(bundle.train)
    mean, std = by_hand(written.train_images[in_train])
    np.testing.assert_allclose(statistics["mean"], mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(statistics["std"], std, rtol=0, atol=1e-7)
    assert np.ptp(mean) > 0.2  # the channels' statistics are their own
    # Neither val nor test contributed: the whole training file's statistics differ.
    assert np.abs(by_hand(written.train_images)[0] - mean).max() > 1e-5
    # Val and test are standardised with the train split's statistics, not their own.
    val_images = written.train_images[~in_train]  # in file order, as the split keeps them
    for images, split in ((val_images, bundle.val), (written.test_images, bundle.test)):
        expected = (images / 255 - mean[:, None, None]) / std[:, None, None]
        np.testing.assert_allclose(split.x, expected, rtol=0, atol=1e-5)


def test_cifar100_is_extracted_from_its_archive(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "staging")
    data = tmp_path / "data"
    write_archive(data / "cifar-100-python.tar.gz", tmp_path / "staging", folder="cifar-100-python")
    bundle = load("cifar100", data)
    assert bundle.extras["source"] == str(data / "cifar-100-python")
    extracted = sorted(p.name for p in (data / "cifar-100-python").iterdir())
    assert extracted == ["meta", "test", "train"]  # the files only: no readme, no lock
    assert_same_splits(bundle, load("cifar100", tmp_path / "staging"))
    assert (
        bundle.extras["normalisation"]
        == load("cifar100", tmp_path / "staging").extras["normalisation"]
    )


def serve_archive(
    tmp_path: Path, served: Server, monkeypatch: pytest.MonkeyPatch, md5: str | None = None
) -> Path:
    """Serve a tiny archive as `cifar100.ARCHIVE` (its real MD5 unless `md5` is given)."""
    write_cifar100(tmp_path / "staging")
    archive = write_archive(
        served.folder / "cifar-100-python.tar.gz", tmp_path / "staging", folder="cifar-100-python"
    )
    md5 = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(
        cifar100, "ARCHIVE", RemoteFile(archive.name, (served.url + archive.name,), md5)
    )
    return archive


def test_cifar100_archive_is_downloaded_verified_and_extracted(
    tmp_path: Path,
    server: Server,  # noqa: F811 (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
    isolated: Path,
) -> None:
    archive = serve_archive(tmp_path, server, monkeypatch)
    bundle = load("cifar100")
    assert (isolated / archive.name).read_bytes() == archive.read_bytes()
    assert bundle.extras["source"] == str(isolated / "cifar-100-python")
    assert_same_splits(bundle, load("cifar100", tmp_path / "staging"))
    load("cifar100")
    assert server.requests == [f"/{archive.name}"]  # once


def test_a_cifar100_archive_with_a_wrong_md5_is_discarded(
    tmp_path: Path,
    server: Server,  # noqa: F811 (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
    isolated: Path,
) -> None:
    serve_archive(tmp_path, server, monkeypatch, md5="0" * 32)
    with pytest.raises(BenchError, match="but its publisher gives 0{32}"):
        load("cifar100")
    assert not (isolated / "cifar-100-python.tar.gz").exists()


def test_a_planted_cifar100_pickle_is_refused(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    marker = tmp_path / "the-command-ran"
    pickle_file(tmp_path / "test", {b"data": RunsACommand(f"touch {marker}")})
    with pytest.raises(
        BenchError, match=r"test: refused: the pickle asks for \w+\.system, which a CIFAR-100"
    ):
        load("cifar100", tmp_path)
    assert not marker.exists()


def test_a_cifar100_file_without_fine_labels_is_a_clear_error(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    images, labels = images_of(N_TEST, seed=5)
    # CIFAR-10's key in CIFAR-100's place: the loader must not fall back on it.
    pickle_file(
        tmp_path / "test", {b"data": images.reshape(N_TEST, -1), b"labels": labels.tolist()}
    )
    with pytest.raises(BenchError, match=f"test: 'fine_labels' must be {N_TEST} integers"):
        load("cifar100", tmp_path)


def test_without_data_or_network_cifar100_is_unavailable_with_instructions(
    isolated: Path,
) -> None:
    with pytest.raises(DatasetUnavailable) as error:
        load("cifar100")
    message = str(error.value)
    for needed in (
        "CIFAR-100 was not found",
        "cifar-100-python.tar.gz",
        "DIR/cifar-100-python/",
        "(train, test, meta)",
        "--data-dir",
        "network access",
        "Connection refused",
    ):
        assert needed in message
    assert str(isolated) in message
