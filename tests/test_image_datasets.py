"""`fashion_mnist`, `fashion_mnist:<n>` and `cifar10`, read from tiny files in the real formats.

Every test writes its own IDX files, pickled batches or archives, points the cache folder and the
Debian folder at empty temporary folders, and sends downloads to a closed local port, so nothing
here reads the machine's real datasets or waits for a network. Download tests serve the tiny
files from a local `http.server`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError, DatasetUnavailable
from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.data.downloads import CACHE_ENV, RemoteFile
from bench.datasets import cifar10, fashion_mnist
from bench.datasets.fashion_mnist import FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES
from bench.plan.profiles import PROFILES
from bench.train.teachers import obtain_teacher
from tests.conftest import record_json

CIFAR_NAMES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_TRAIN, N_TEST = 120, 40  # fashion files: 10 val images, one per class at least
PER_BATCH, N_CIFAR_TEST = 20, 20  # cifar: 5 x 20 training images


def closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused at once, as offline as it gets."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and Debian folder, and downloads that fail at once; returns the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", tmp_path / "no-debian-package")
    dead = closed_port_url()
    remotes = tuple(RemoteFile(r.name, (dead + r.name,), r.md5) for r in fashion_mnist.REMOTE_FILES)
    monkeypatch.setattr(fashion_mnist, "REMOTE_FILES", remotes)
    archive = cifar10.ARCHIVE
    monkeypatch.setattr(cifar10, "ARCHIVE", RemoteFile(archive.name, (dead,), archive.md5))
    return cache


# --- writing the real formats ---------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: two zero bytes, element type, rank, big-endian sizes, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def labelled_images(
    n: int, shape: tuple[int, ...], seed: int, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images with balanced labels; each image's first pixel is its label, so a
    test can see that images and labels stay paired through the splits."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes).astype(np.uint8)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = labels
    return images, labels


def write_fashion(
    folder: Path, n_train: int = N_TRAIN, gzipped: tuple[str, ...] = (TEST_IMAGES, TEST_LABELS)
) -> dict[str, np.ndarray]:
    """The four IDX files (the names in `gzipped` as .gz, the others raw); returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = labelled_images(n_train, (28, 28), seed=1)
    test_images, test_labels = labelled_images(N_TEST, (28, 28), seed=2)
    arrays = dict(zip(FILES, (train_images, train_labels, test_images, test_labels), strict=True))
    for name, array in arrays.items():
        data = idx_bytes(array)
        if name in gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def pickle_file(path: Path, content: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def write_cifar(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Batches laid out as the python version's (bytes keys, rows of 3072 channel-major values,
    protocol 2); returns the test images (N, 3, 32, 32) and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    names = (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH)
    for seed, name in enumerate(names):
        n = N_CIFAR_TEST if name == cifar10.TEST_BATCH else PER_BATCH
        images, labels = labelled_images(n, (3, 32, 32), seed=10 + seed)
        batch = {
            b"batch_label": f"{name} of the test suite".encode(),
            b"labels": labels.tolist(),
            b"data": images.reshape(n, 3 * 32 * 32),
            b"filenames": [f"image_{seed}_{i}.png".encode() for i in range(n)],
        }
        pickle_file(folder / name, batch)
    meta = {
        b"num_cases_per_batch": PER_BATCH,
        b"label_names": [name.encode() for name in CIFAR_NAMES],
        b"num_vis": 3 * 32 * 32,
    }
    pickle_file(folder / cifar10.META, meta)
    return images, labels


def write_archive(
    path: Path,
    batches: Path,
    extra: dict[str, bytes] | None = None,
    folder: str = cifar10.FOLDER,
) -> Path:
    """A CIFAR archive: the batch folder under the name `folder` (CIFAR-10's unless told), a file
    it does not need, and `extra` members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {f"{folder}/readme.html": b"<p>not needed</p>", **(extra or {})}
    with tarfile.open(path, "w:gz") as tar:
        tar.add(batches, arcname=folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def load(name: str, data_dir: Path | None = None) -> DatasetBundle:
    return DATASETS.get(name).load(DatasetLoaderOptions(data_dir=data_dir))


def as_uint8(split: Split) -> np.ndarray:
    return np.rint(split.x * 255).astype(np.uint8)


def assert_pairs_kept(bundle: DatasetBundle) -> None:
    for split in (bundle.train, bundle.val, bundle.test):
        first_pixel = as_uint8(split).reshape(len(split), -1)[:, 0]
        np.testing.assert_array_equal(first_pixel, split.y)


def assert_same_splits(a: DatasetBundle, b: DatasetBundle) -> None:
    for left, right in zip((a.train, a.val, a.test), (b.train, b.val, b.test), strict=True):
        np.testing.assert_array_equal(left.x, right.x)
        np.testing.assert_array_equal(left.y, right.y)


def rows(images: np.ndarray) -> list[bytes]:
    return sorted(image.tobytes() for image in images)


# --- fashion_mnist -------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", ["", "fashion-mnist"])
def test_fashion_mnist_reads_raw_and_gzipped_idx_files(tmp_path: Path, subfolder: str) -> None:
    arrays = write_fashion(tmp_path / "data" / subfolder)
    bundle = load("fashion_mnist", tmp_path / "data")
    assert (bundle.name, bundle.version, bundle.modality) == (
        "fashion_mnist",
        "official-1",
        "image",
    )
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[9] == "Ankle boot"
    assert len(bundle.class_names) == 10 and bundle.input_shape == (1, 28, 28)
    assert bundle.sizes() == {"train": 108, "val": 12, "test": N_TEST}
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert_pairs_kept(bundle)
    # The official test set, in file order; train + val are exactly the official training set.
    np.testing.assert_array_equal(as_uint8(bundle.test)[:, 0], arrays[TEST_IMAGES])
    train_and_val = np.concatenate([as_uint8(bundle.train), as_uint8(bundle.val)])[:, 0]
    assert rows(train_and_val) == rows(arrays[TRAIN_IMAGES])
    assert (np.bincount(bundle.val.y, minlength=10) >= 1).all()  # stratified
    assert bundle.extras["source"] == str(tmp_path / "data" / subfolder)


def test_fashion_mnist_split_is_deterministic(tmp_path: Path) -> None:
    write_fashion(tmp_path / "a")
    write_fashion(tmp_path / "b", gzipped=FILES)  # the same data, another folder and encoding
    first = load("fashion_mnist", tmp_path / "a")
    assert_same_splits(first, load("fashion_mnist", tmp_path / "a"))
    assert_same_splits(first, load("fashion_mnist", tmp_path / "b"))


def test_the_debian_folder_is_read_without_data_dir_and_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_fashion(debian, gzipped=FILES)  # the package installs .gz files
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", debian)
    bundle = load("fashion_mnist:60")
    assert bundle.extras["source"] == str(debian)
    assert not isolated.exists()  # nothing downloaded, no cache folder made
    write_fashion(tmp_path / "data", n_train=100)
    assert load("fashion_mnist", tmp_path / "data").extras["source"] == str(tmp_path / "data")


def test_fashion_mnist_subset_sizes_versions_and_strata(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    bundle = load("fashion_mnist:80", tmp_path)
    assert (bundle.name, bundle.version) == ("fashion_mnist:80", "official-1-subset80-teacher-all")
    # 80/20, then 80 // 4 test; the teacher learns from every training image but the 16 val ones.
    assert bundle.sizes() == {"train": 64, "val": 16, "test": 20, "teacher_train": N_TRAIN - 16}
    assert_pairs_kept(bundle)
    drawn = np.concatenate([bundle.train.y, bundle.val.y])
    np.testing.assert_array_equal(np.bincount(drawn, minlength=10), 8)  # stratified: 8 a class
    np.testing.assert_array_equal(np.bincount(bundle.test.y, minlength=10), 2)
    assert_same_splits(bundle, load("fashion_mnist:80", tmp_path))
    everything = load(f"fashion_mnist:{N_TRAIN}", tmp_path)  # every training image
    assert everything.sizes() == {"train": 96, "val": 24, "test": 30, "teacher_train": 96}
    assert everything.version == f"official-1-subset{N_TRAIN}-teacher-all"


def test_a_subsets_teacher_learns_from_every_training_image_outside_validation(
    tmp_path: Path,
) -> None:
    """The teacher's split holds the students' training images and the rest of the official
    training set, never a validation image; the teacher is trained on it, the students not."""
    write_fashion(tmp_path)
    bundle = load("fashion_mnist:80", tmp_path)
    assert bundle.teacher_train is not None
    teacher_rows = {row.tobytes() for row in bundle.teacher_train.x}
    assert {row.tobytes() for row in bundle.train.x} <= teacher_rows
    assert not {row.tobytes() for row in bundle.val.x} & teacher_rows
    assert bundle.for_teacher().train is bundle.teacher_train
    assert bundle.for_teacher().teacher_train is None
    assert load("fashion_mnist", tmp_path).for_teacher().train.x.shape[0] == 108

    entry = DATASETS.get("fashion_mnist:80")
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, "image", 0)
    cpu = torch.device("cpu")
    trained = obtain_teacher(spec, bundle, tmp_path / "a" / spec.key, cpu)
    on_its_split = obtain_teacher(spec, bundle.for_teacher(), tmp_path / "b" / spec.key, cpu)
    on_the_students = obtain_teacher(
        spec, dataclasses.replace(bundle, teacher_train=None), tmp_path / "c" / spec.key, cpu
    )
    for key, value in trained.module.state_dict().items():
        torch.testing.assert_close(on_its_split.module.state_dict()[key], value, rtol=0, atol=0)
    assert json.dumps(trained.info["history"]) == json.dumps(on_its_split.info["history"])
    assert json.dumps(trained.info["history"]) != json.dumps(on_the_students.info["history"])


def test_fashion_mnist_names_are_checked_before_any_file_is_read() -> None:
    assert DATASETS.get("fashion_mnist").version == "official-1"  # the name and the family coexist
    entry = DATASETS.get("fashion_mnist:2000")
    assert (entry.name, entry.version, entry.modality) == (
        "fashion_mnist:2000",
        "official-1-subset2000-teacher-all",
        "image",
    )
    for bad in ("0", "49", "60001", "abc", "-5", "1e3", "", "２０００"):
        with pytest.raises(BenchError, match="an integer from 50 to 60000"):
            DATASETS.get(f"fashion_mnist:{bad}")
    with pytest.raises(BenchError, match="write it as 'fashion_mnist:80'"):
        DATASETS.get("fashion_mnist:0080")
    with pytest.raises(BenchError, match=r"fashion_mnist:<n>"):
        DATASETS.get("no_such_dataset")


def test_a_subset_larger_than_the_files_is_refused(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    with pytest.raises(BenchError, match=f"holds only {N_TRAIN} training images"):
        load("fashion_mnist:500", tmp_path)


def test_idx_values_are_big_endian_of_the_declared_type() -> None:
    values = np.array([[1, -2], [300, -30000]], dtype=np.int16)
    parsed = fashion_mnist.parse_idx(idx_bytes(values, code=0x0B), "t")
    np.testing.assert_array_equal(parsed, values)
    assert parsed.dtype == np.int16 and parsed.dtype.isnative


def damage(data: bytes, how: str) -> bytes:
    if how == "truncated data":
        return data[:-5]
    if how == "trailing bytes":
        return data + b"\x00"
    if how == "bad magic":
        return b"\x01" + data[1:]
    if how == "unknown type":
        return data[:2] + b"\x07" + data[3:]
    assert how == "truncated header"
    return data[:10]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated data", "IDX file truncated"),
        ("trailing bytes", "longer than its header says"),
        ("bad magic", "not an IDX file"),
        ("unknown type", "unknown IDX element type 0x07"),
        ("truncated header", "truncated IDX header"),
    ],
)
def test_a_corrupt_idx_file_is_a_clear_error(tmp_path: Path, how: str, message: str) -> None:
    write_fashion(tmp_path, gzipped=())
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(damage(path.read_bytes(), how))
    with pytest.raises(BenchError, match=message) as error:
        load("fashion_mnist", tmp_path)
    assert str(path) in str(error.value)


def test_a_truncated_gzip_and_mismatched_labels_are_clear_errors(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    gz = tmp_path / f"{TEST_IMAGES}.gz"
    complete = gz.read_bytes()
    gz.write_bytes(complete[: len(complete) // 2])
    with pytest.raises(BenchError, match="damaged gzip file"):
        load("fashion_mnist", tmp_path)
    gz.write_bytes(complete)
    labels = fashion_mnist.read_idx(tmp_path / f"{TEST_LABELS}.gz")
    (tmp_path / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(idx_bytes(labels[:-1])))
    with pytest.raises(BenchError, match=f"expected {N_TEST} uint8 labels"):
        load("fashion_mnist", tmp_path)


def test_without_data_or_network_fashion_mnist_is_unavailable_with_instructions(
    tmp_path: Path, isolated: Path
) -> None:
    started = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as error:
        load("fashion_mnist:2000")
    assert time.perf_counter() - started < 2.0
    message = str(error.value)
    for needed in (*FILES, "--data-dir", "apt install dataset-fashion-mnist", "network access"):
        assert needed in message
    assert str(isolated / "fashion-mnist") in message  # where a download would go
    assert "Connection refused" in message
    assert list((isolated / "fashion-mnist").iterdir()) == []  # no partial file, no lock


def test_unavailable_fashion_mnist_runs_are_skipped(cli, tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = cli(
        "run", "--profile", "smoke", "--dataset", "fashion_mnist:80", "--method", "scratch",
        "--results", results,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = record_json(results, "smoke", "fashion_mnist:80", "scratch", 0)
    assert record is not None and record["status"] == "skipped"
    assert "apt install dataset-fashion-mnist" in record["error"]["message"]


# --- downloads ------------------------------------------------------------------------------


@dataclass
class Server:
    folder: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A local HTTP server of the files in `server.folder`, recording the paths asked for."""
    served = Server(tmp_path / "served", "")
    served.folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(served.folder), **kwargs)

        def do_GET(self) -> None:
            served.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve_fashion(server: Server, monkeypatch: pytest.MonkeyPatch, wrong_md5_for: str = "") -> None:
    """Serve gzipped tiny files; the first URL of each is dead, so the mirror is tried next."""
    write_fashion(server.folder, gzipped=FILES)
    remotes = []
    for name in FILES:
        md5 = hashlib.md5((server.folder / f"{name}.gz").read_bytes()).hexdigest()
        md5 = "0" * 32 if name == wrong_md5_for else md5
        urls = (closed_port_url() + name, f"{server.url}{name}.gz")
        remotes.append(RemoteFile(f"{name}.gz", urls, md5))
    monkeypatch.setattr(fashion_mnist, "REMOTE_FILES", tuple(remotes))


@pytest.mark.parametrize("with_data_dir", [False, True])
def test_fashion_mnist_is_downloaded_verified_and_reused(
    tmp_path: Path,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    isolated: Path,
    with_data_dir: bool,
) -> None:
    serve_fashion(server, monkeypatch)
    data_dir = tmp_path / "data" if with_data_dir else None
    target = (data_dir or isolated) / "fashion-mnist"
    bundle = load("fashion_mnist", data_dir)
    assert bundle.extras["source"] == str(target)
    assert sorted(server.requests) == sorted(f"/{name}.gz" for name in FILES)
    for name in FILES:
        assert (target / f"{name}.gz").read_bytes() == (server.folder / f"{name}.gz").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in FILES)
    assert_same_splits(bundle, load("fashion_mnist", data_dir))
    assert len(server.requests) == len(FILES)  # the second load downloaded nothing


def test_a_checksum_mismatch_is_an_error_and_leaves_no_file(
    server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    serve_fashion(server, monkeypatch, wrong_md5_for=TRAIN_IMAGES)  # the first file fetched
    with pytest.raises(BenchError, match="has MD5 [0-9a-f]{32}, but its publisher gives 0{32}"):
        load("fashion_mnist")
    assert server.requests == [f"/{TRAIN_IMAGES}.gz"]
    assert list((isolated / "fashion-mnist").iterdir()) == []


# --- cifar10 --------------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar10_reads_pickled_batches(tmp_path: Path, subfolder: str) -> None:
    test_images, test_labels = write_cifar(tmp_path / "data" / subfolder)
    bundle = load("cifar10", tmp_path / "data")
    assert (bundle.name, bundle.version, bundle.modality) == ("cifar10", "official-1", "image")
    assert bundle.class_names == CIFAR_NAMES  # from batches.meta
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.sizes() == {"train": 90, "val": 10, "test": N_CIFAR_TEST}
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == np.float32 and split.x.min() >= 0.0 and split.x.max() <= 1.0
    # Rows are channel-major: the test split is the written (N, 3, 32, 32) images, in order.
    np.testing.assert_array_equal(as_uint8(bundle.test), test_images)
    np.testing.assert_array_equal(bundle.test.y, test_labels)
    assert_pairs_kept(bundle)
    np.testing.assert_array_equal(np.bincount(bundle.val.y, minlength=10), 1)  # stratified
    assert_same_splits(bundle, load("cifar10", tmp_path / "data"))


def test_batches_pickled_by_numpy_1_load(tmp_path: Path) -> None:
    """numpy 1 (and the original batches) name `numpy.core.multiarray`, numpy 2 `numpy._core`."""
    write_cifar(tmp_path / "new")
    write_cifar(tmp_path / "old")
    for batch in (tmp_path / "old").iterdir():
        data = batch.read_bytes()
        old = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert old != data or batch.name == cifar10.META
        batch.write_bytes(old)
    assert_same_splits(load("cifar10", tmp_path / "old"), load("cifar10", tmp_path / "new"))


def test_cifar10_is_extracted_from_its_archive(tmp_path: Path) -> None:
    write_cifar(tmp_path / "staging")
    data = tmp_path / "data"
    write_archive(data / "cifar-10-python.tar.gz", tmp_path / "staging")
    bundle = load("cifar10", data)
    assert bundle.extras["source"] == str(data / "cifar-10-batches-py")
    extracted = sorted(p.name for p in (data / "cifar-10-batches-py").iterdir())
    assert extracted == sorted(cifar10.BATCH_FILES)  # the batches only: no readme, no lock
    assert_same_splits(bundle, load("cifar10", tmp_path / "staging"))


@pytest.mark.parametrize("member", ["../escaped.txt", "cifar-10-batches-py/../../escaped.txt"])
def test_an_archive_with_a_member_outside_its_folder_is_refused(
    tmp_path: Path, member: str
) -> None:
    write_cifar(tmp_path / "staging")
    data = tmp_path / "deep" / "data"
    write_archive(data / "cifar-10-python.tar.gz", tmp_path / "staging", {member: b"planted"})
    with pytest.raises(BenchError, match="refused: member .*escaped.txt"):
        load("cifar10", data)
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list((data / "cifar-10-batches-py").iterdir()) == []  # refused whole


def test_an_archive_with_an_absolute_member_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path / "staging")
    absolute = str(tmp_path / "absolute.txt")
    write_archive(
        tmp_path / "data" / "cifar-10-python.tar.gz", tmp_path / "staging", {absolute: b"x"}
    )
    with pytest.raises(BenchError, match="refused: member"):
        load("cifar10", tmp_path / "data")
    assert not Path(absolute).exists()


class RunsACommand:
    """What a malicious batch would hold: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_a_pickle_naming_a_forbidden_global_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "the-command-ran"
    pickle_file(tmp_path / "data_batch_3", {b"data": RunsACommand(f"touch {marker}")})
    with pytest.raises(BenchError, match=r"data_batch_3: refused: the pickle asks for \w+\.system"):
        load("cifar10", tmp_path)
    assert not marker.exists()


def test_a_damaged_batch_is_a_clear_error(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    batch = tmp_path / cifar10.TEST_BATCH
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(BenchError, match="test_batch: not a readable CIFAR-10 batch"):
        load("cifar10", tmp_path)


def test_without_data_or_network_cifar10_is_unavailable_with_instructions(isolated: Path) -> None:
    with pytest.raises(DatasetUnavailable) as error:
        load("cifar10")
    message = str(error.value)
    for needed in ("cifar-10-python.tar.gz", "cifar-10-batches-py", "--data-dir", "data_batch_1"):
        assert needed in message
    assert str(isolated) in message


def test_cifar10_archive_is_downloaded_verified_and_extracted(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    test_images, _ = write_cifar(tmp_path / "staging")
    archive = write_archive(server.folder / "cifar-10-python.tar.gz", tmp_path / "staging")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    remote = RemoteFile(archive.name, (server.url + archive.name,), md5)
    monkeypatch.setattr(cifar10, "ARCHIVE", remote)
    bundle = load("cifar10")
    assert (isolated / archive.name).read_bytes() == archive.read_bytes()
    assert bundle.extras["source"] == str(isolated / "cifar-10-batches-py")
    np.testing.assert_array_equal(as_uint8(bundle.test), test_images)
    load("cifar10")
    assert server.requests == [f"/{archive.name}"]  # once


# --- end to end -----------------------------------------------------------------------------


def test_a_fashion_mnist_subset_runs_end_to_end(cli, tmp_path: Path) -> None:
    write_fashion(tmp_path / "data")
    results = tmp_path / "results"
    result = cli(
        "run", "--profile", "smoke", "--dataset", "fashion_mnist:80", "--method", "scratch",
        "--data-dir", tmp_path / "data", "--results", results,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = record_json(results, "smoke", "fashion_mnist:80", "scratch", 0)
    assert record is not None and record["status"] == "ok", record and record["error"]
    assert record["dataset"]["version"] == "official-1-subset80-teacher-all"
    assert record["dataset"]["sizes"] == {
        "train": 64, "val": 16, "test": 20, "teacher_train": N_TRAIN - 16
    }  # fmt: skip
