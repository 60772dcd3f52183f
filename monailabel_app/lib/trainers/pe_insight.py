"""The ``pe_insight`` trainer: INSIGHT from the datastore's images and their weak labels only.

``POST /train/pe_insight`` (MONAI Label runs it in a subprocess) reads every datastore image whose
weak label (:mod:`lib.datastore.weak_labels`) is 0 or 1 (``uncertain`` and unlabeled scans are left
out; voxel labels are never read), splits them into train and validation sets (stratified, the same
split for the same images and seed), fine-tunes the served model (or trains from scratch) with
:class:`insight.training.InsightTrainer`, and publishes the best epoch's checkpoint atomically as
``<model_dir>/pe_insight.pt``. The served ``pe_insight`` infer task loads it without a restart when its
model version changes. Each run keeps its own folder ``<model_dir>/pe_insight_runs/<run>/``.

Train stats go to ``<model_dir>/pe_insight.train_stats.json`` (atomically) and show in /info under
``train_stats.pe_insight``: ``status``, ``model_version``, ``previous_model_version``, ``epochs``,
``best_epoch``, ``train_loss``, ``val_auroc`` (null when the validation set lacks a class),
``warning`` (set when the published epoch gave every validation scan the same p(PE): the model
has not learned; else null), ``history``, ``train_images``, ``val_images``, ``positives``, ``negatives``, ``left_out`` (uncertain /
unlabeled), ``device``, ``started``, ``finished``, ``seconds``, ``checkpoint``; a failed run adds
``last_error`` and keeps the last good run's fields.

Request keys (``POST /train/pe_insight`` JSON body; defaults from ``--conf``): ``epochs``
(``train_epochs``, 10), ``learning_rate`` (``train_learning_rate``, 5e-4), ``val_fraction``
(``train_val_fraction``, 0.25), ``init`` ``current``|``scratch`` (``train_init``, current), ``seed``
(``train_seed``, 0), ``augment`` (``train_augment``, true). The rest of the recipe is the one the
served checkpoint was trained with (as stored in it), else the library's defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from monailabel.interfaces.tasks.train import TrainTask

from insight.config import TrainConfig
from insight.errors import InputError, InsightError
from insight.io.atomic import atomic_output, write_json_atomic
from lib.datastore.provenance import utc_now_iso
from lib.datastore.weak_labels import weak_label_of
from lib.trainers.train_stats import read_stats_file, record_training_error

__all__ = ["PEInsightTrain", "TrainSettings", "published_checkpoint_path", "train_stats_path", "read_train_stats",
           "train_settings_from_conf"]

logger = logging.getLogger(__name__)

PUBLISHED_NAME = "pe_insight.pt"
STATS_NAME = "pe_insight.train_stats.json"
RUNS_DIR = "pe_insight_runs"
INIT_CHOICES = ("current", "scratch")


def published_checkpoint_path(model_dir: str | Path) -> Path:
    """Where training publishes the ``pe_insight`` checkpoint the server serves."""
    return Path(model_dir) / PUBLISHED_NAME


def train_stats_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / STATS_NAME


def read_train_stats(model_dir: str | Path) -> dict[str, Any]:
    """The last training's stats ({} when none ran; ``{"error": ...}`` for an unreadable file)."""
    return read_stats_file(train_stats_path(model_dir))


@dataclass(frozen=True)
class TrainSettings:
    """One training run's settings (validated)."""

    epochs: int = 10
    learning_rate: float = 5e-4
    val_fraction: float = 0.25
    init: str = "current"
    seed: int = 0
    augment: bool = True
    threads: int = 0

    def to_request(self) -> dict[str, Any]:
        """The request keys (shown as the trainer's config in /info; MONAI Label clients edit them)."""
        return {"epochs": self.epochs, "learning_rate": self.learning_rate, "val_fraction": self.val_fraction,
                "init": self.init, "seed": self.seed, "augment": self.augment}


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(number)


def _as_float(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
        bracket = "(" if low_open else "["
        raise InputError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise InputError(f"{name} must be true or false, got {value!r}")


def _settings(values: Mapping[str, Any], base: TrainSettings) -> TrainSettings:
    """``base`` with the keys of ``values`` validated and applied. Raises InputError."""
    changes: dict[str, Any] = {}
    if values.get("epochs") is not None:
        changes["epochs"] = _as_int("epochs", values["epochs"], 1, 10_000)
    if values.get("learning_rate") is not None:
        changes["learning_rate"] = _as_float("learning_rate", values["learning_rate"], 0.0, 1.0, low_open=True)
    if values.get("val_fraction") is not None:
        changes["val_fraction"] = _as_float("val_fraction", values["val_fraction"], 0.0, 0.9)
    if values.get("init") is not None:
        if values["init"] not in INIT_CHOICES:
            raise InputError(f"init must be one of {', '.join(INIT_CHOICES)}, got {values['init']!r}")
        changes["init"] = values["init"]
    if values.get("seed") is not None:
        changes["seed"] = _as_int("seed", values["seed"], 0, 2**31 - 1)
    if values.get("augment") is not None:
        changes["augment"] = _as_bool("augment", values["augment"])
    if values.get("threads") is not None:
        changes["threads"] = _as_int("threads", values["threads"], 0, 1024)
    return dataclasses.replace(base, **changes)


def train_settings_from_conf(conf: Mapping[str, str]) -> TrainSettings:
    """Defaults from ``--conf train_epochs / train_learning_rate / train_val_fraction / train_init /
    train_seed / train_augment / train_threads``. Raises InputError for a bad value."""
    keys = ("epochs", "learning_rate", "val_fraction", "init", "seed", "augment", "threads")
    return _settings({k: conf.get(f"train_{k}") for k in keys}, TrainSettings())


def _split_key(image_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def split_cases(labels: Mapping[str, int], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Stratified, deterministic (train ids, val ids).

    Each class gives ``round(val_fraction * n)`` scans to validation, at least one when it has two or
    more and ``val_fraction > 0``, and always keeps at least one for training.
    """
    train, val = [], []
    for label in (0, 1):
        ids = sorted((i for i, v in labels.items() if v == label), key=lambda i: _split_key(i, seed))
        k = 0
        if val_fraction > 0 and len(ids) >= 2:
            k = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
        val += ids[:k]
        train += ids[k:]
    return sorted(train), sorted(val)


class PEInsightTrain(TrainTask):
    """MONAI Label train task for ``pe_insight``.

    Args:
        model_dir: where checkpoints, runs and stats go.
        current_checkpoint: returns the checkpoint served now (the starting weights and recipe).
        defaults: settings used for request keys not given.
        device: ``auto``, ``cpu``, ``cuda``... for training.
        conf_error: why the ``--conf train_*`` values were not usable (shown in /info), if so.
    """

    def __init__(self, model_dir: str | Path, current_checkpoint: Callable[[], Path], defaults: TrainSettings,
                 device: str = "auto", conf_error: str | None = None) -> None:
        super().__init__("Trains pe_insight from the datastore images and their scan-level (weak) labels only; "
                         "publishes the new weights to the server without a restart")
        self.model_dir = Path(model_dir)
        self.current_checkpoint = current_checkpoint
        self.defaults = defaults
        self.device = device
        self.conf_error = conf_error

    def config(self) -> dict[str, Any]:
        return self.defaults.to_request()

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.conf_error:
            info["conf_error"] = self.conf_error
        return info

    def stats(self) -> dict[str, Any]:
        return read_train_stats(self.model_dir)

    # -- checks the server runs before starting a (subprocess) training ------------------------------
    def validate_request(self, request: Mapping[str, Any]) -> TrainSettings:
        """The run's settings. Raises InputError for a bad key value."""
        return _settings(request, self.defaults)

    def weak_labels(self, datastore: Any) -> tuple[dict[str, int], list[str]]:
        """({image id: 0/1} trainable, [ids left out: uncertain or unlabeled])."""
        labels, left_out = {}, []
        for image_id in datastore.list_images():
            value = weak_label_of(datastore.get_image_info(image_id))
            if value in (0, 1):
                labels[image_id] = int(value)
            else:
                left_out.append(image_id)
        return labels, left_out

    def check_trainable(self, datastore: Any) -> None:
        """Raise InputError unless there is at least one PE and one no-PE weak label."""
        labels, left_out = self.weak_labels(datastore)
        positives = sum(labels.values())
        if positives == 0 or positives == len(labels):
            raise InputError(f"pe_insight training needs scans with weak label 1 and scans with weak label 0; the "
                             f"datastore has {positives} with 1, {len(labels) - positives} with 0 and "
                             f"{len(left_out)} uncertain or unlabeled (PUT /insight/weak-labels/<image>)")

    # -- the run itself (in MONAI Label's training subprocess) ---------------------------------------
    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any]:
        started, started_iso = time.perf_counter(), utc_now_iso()
        try:
            return self._train(request, datastore, started, started_iso)
        except InsightError as err:
            self._record_error(str(err), started_iso)
            raise
        except Exception as err:
            self._record_error(f"{type(err).__name__}: {err}", started_iso)
            raise

    def _train(self, request: dict[str, Any], datastore: Any, started: float, started_iso: str) -> dict[str, Any]:
        from insight.devices import resolve_device  # heavy imports: only in the training process
        from insight.models.checkpoint import load_checkpoint
        from insight.training import InsightTrainer, LabeledCase, prepare_cases

        settings = self.validate_request(request)
        self.check_trainable(datastore)
        labels, left_out = self.weak_labels(datastore)
        train_ids, val_ids = split_cases(labels, settings.val_fraction, settings.seed)
        current_path = self.current_checkpoint()
        current = load_checkpoint(current_path, "cpu", with_training_state=True)
        train_config = self._train_config(current.training.get("train_config"), settings)
        device = resolve_device(self.device)
        run_dir = self.model_dir / RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        logger.info("pe_insight training: %d train / %d val scans (%d PE), %d left out, from %s (%s), %d epoch(s), "
                    "device %s, run %s", len(train_ids), len(val_ids), sum(labels.values()), len(left_out),
                    current.model_version, settings.init, settings.epochs, device, run_dir)

        def cases(ids: list[str]) -> list[LabeledCase]:
            return [LabeledCase(i, Path(datastore.get_image_uri(i)), labels[i]) for i in ids]

        preprocess = current.config.preprocess
        train_cases = prepare_cases(cases(train_ids), preprocess, False, "preparing train")
        val_cases = prepare_cases(cases(val_ids), preprocess, False, "preparing val") if val_ids else None
        trainer = InsightTrainer(current.config, train_config, run_dir, device)
        if settings.init == "current":
            trainer.model.load_state_dict(current.model.state_dict())
        summary = trainer.fit(train_cases, val_cases, progress=False)

        published = published_checkpoint_path(self.model_dir)
        best = load_checkpoint(summary.best_checkpoint, "cpu")
        with atomic_output(published) as tmp:
            shutil.copyfile(summary.best_checkpoint, tmp)
        stats = self._stats(summary.history, best.model_version, current.model_version, settings, train_ids, val_ids,
                            labels, left_out, str(device), started, started_iso, published, run_dir)
        write_json_atomic(train_stats_path(self.model_dir), stats)
        logger.info("pe_insight training done: published %s as %s (val AUROC %s)", best.model_version, published,
                    stats["val_auroc"])
        return stats

    @staticmethod
    def _train_config(stored: Any, settings: TrainSettings) -> TrainConfig:
        """The served checkpoint's recipe (fields this library knows), with this run's settings."""
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        recipe = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (stored or {}).items() if k in known}
        recipe.update(epochs=settings.epochs, learning_rate=settings.learning_rate, seed=settings.seed,
                      augment=settings.augment, num_threads=settings.threads)
        if settings.init == "current" and recipe.get("seed_instances"):
            # a seeded checkpoint is fine-tuned with weak-label epochs alone: seeding again would
            # reset its context module, and its BatchNorm statistics describe the seeded instances
            recipe.update(seed_instances=0, freeze_batch_norm=True)
        try:
            return TrainConfig(**recipe)
        except (TypeError, ValueError) as err:
            logger.warning("stored training recipe not usable (%s); using the library's defaults", err)
            return TrainConfig(epochs=settings.epochs, learning_rate=settings.learning_rate, seed=settings.seed,
                               augment=settings.augment, num_threads=settings.threads)

    @staticmethod
    def _stats(history: list[dict[str, Any]], version: str, previous: str, settings: TrainSettings,
               train_ids: list[str], val_ids: list[str], labels: Mapping[str, int], left_out: list[str], device: str,
               started: float, started_iso: str, published: Path, run_dir: Path) -> dict[str, Any]:
        clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                 for r in history]
        aurocs = [(r.get("val_auroc"), r["epoch"]) for r in clean if r.get("val_auroc") is not None]
        best_auroc, best_epoch = max(aurocs) if aurocs else (None, clean[-1]["epoch"] if clean else None)
        return {
            "status": "done", "model_version": version, "previous_model_version": previous,
            "epochs": len(clean), "best_epoch": best_epoch,
            "train_loss": clean[-1].get("train_loss") if clean else None, "val_auroc": best_auroc,
            # the published (best) epoch gave every validation scan the same answer: say so
            "warning": next((r.get("warning") for r in clean if r["epoch"] == best_epoch), None),
            "history": clean, "settings": settings.to_request(),
            "train_images": len(train_ids), "val_images": len(val_ids), "positives": int(sum(labels.values())),
            "negatives": len(labels) - int(sum(labels.values())), "left_out": len(left_out),
            "device": device, "started": started_iso, "finished": utc_now_iso(),
            "seconds": round(time.perf_counter() - started, 2), "checkpoint": str(published), "run_dir": str(run_dir),
        }

    def _record_error(self, message: str, started_iso: str) -> None:
        record_training_error(train_stats_path(self.model_dir), "pe_insight", message, started_iso, utc_now_iso())
