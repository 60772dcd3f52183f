"""The ``pe_segmentation`` trainer: the UNet from the datastore's final labels and pseudo-masks.

``POST /train/pe_segmentation`` (MONAI Label runs it in a subprocess) pairs every datastore image with
its clinician-corrected label (tag ``final``, loss weight ``final_weight``) or, failing that, its
pseudo-mask (tag ``pseudo`` by default, weight 1; ``insight pseudo-masks`` writes them), trains with
:func:`insight.segmentation.run_training` in ``nproc`` processes (DDP: gloo on CPU, nccl on GPUs),
starting from the served weights when they fit (``init=current``) or from scratch, and publishes the
best checkpoint atomically to the path the ``pe_segmentation`` infer task serves, which loads it
without a restart.

Files, all beside the served checkpoint ``<path>`` (``--conf seg_model_path``, else
``<model_dir>/pe_segmentation.pt``): ``<stem>_runs/<run>/`` (each run's checkpoints and metrics) and
``<stem>.train_stats.json`` (shown in /info under ``train_stats.pe_segmentation``: ``status``,
``model_version``, ``previous_model_version``, ``epochs``, ``train_loss``, ``final_cases``,
``pseudo_cases``, ``left_out``, ``nproc``, ``seconds_per_iteration``, ``history``...; a failed run
adds ``last_error``).

Request keys (defaults from ``--conf seg_train_<key>``): ``epochs`` (20), ``learning_rate`` (2e-3),
``final_weight`` (3), ``seed`` (0), ``nproc`` (1), ``init`` (``current`` | ``scratch``), ``threads`` (0),
``pseudo_tag`` (``pseudo``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from insight.errors import InputError, InsightError
from insight.io.atomic import atomic_output, write_json_atomic
from lib.trainers.train_stats import read_stats_file, record_training_error

__all__ = ["PESegmentationTrain", "SegTrainSettings", "seg_settings_from_conf", "build_scratch_config",
           "train_stats_path", "runs_dir",
           "PSEUDO_TAG", "FINAL_TAG"]

logger = logging.getLogger(__name__)

#: Datastore label tags: clinician-corrected labels, and pseudo-masks from heatmaps.
FINAL_TAG = DefaultLabelTag.FINAL.value
PSEUDO_TAG = "pseudo"
INIT_CHOICES = ("current", "scratch")


def train_stats_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.name.split('.')[0]}.train_stats.json")


def runs_dir(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.name.split('.')[0]}_runs")


@dataclass(frozen=True)
class SegTrainSettings:
    """One training run's settings (validated by :func:`parse_settings`)."""

    epochs: int = 20
    learning_rate: float = 2e-3
    final_weight: float = 3.0
    seed: int = 0
    nproc: int = 1
    init: str = "current"
    threads: int = 0
    pseudo_tag: str = PSEUDO_TAG

    def to_request(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _number(name: str, value: Any, low: float, high: float, integer: bool) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high or (integer and not number.is_integer()):
        kind = "an integer" if integer else "a number"
        raise InputError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")
    return number


def parse_settings(values: Mapping[str, Any], base: SegTrainSettings) -> SegTrainSettings:
    """``base`` with the known keys of ``values`` validated and applied. Raises InputError."""
    changes: dict[str, Any] = {}
    for name, low, high, integer in (("epochs", 1, 10_000, True), ("learning_rate", 1e-8, 1.0, False),
                                     ("final_weight", 1e-3, 1e3, False), ("seed", 0, 2**31 - 1, True),
                                     ("nproc", 1, 64, True), ("threads", 0, 1024, True)):
        if values.get(name) is not None:
            number = _number(name, values[name], low, high, integer)
            changes[name] = int(number) if integer else number
    if values.get("init") is not None:
        if values["init"] not in INIT_CHOICES:
            raise InputError(f"init must be one of {', '.join(INIT_CHOICES)}, got {values['init']!r}")
        changes["init"] = values["init"]
    if values.get("pseudo_tag") is not None:
        tag = values["pseudo_tag"]
        if not isinstance(tag, str) or not tag or tag == FINAL_TAG:
            raise InputError(f"pseudo_tag must be a label tag other than {FINAL_TAG!r}, got {tag!r}")
        changes["pseudo_tag"] = tag
    return dataclasses.replace(base, **changes)


def seg_settings_from_conf(conf: Mapping[str, str]) -> SegTrainSettings:
    """Defaults from ``--conf seg_train_<key> VALUE``. Raises InputError for a bad value."""
    keys = [f.name for f in dataclasses.fields(SegTrainSettings)]
    return parse_settings({k: conf.get(f"seg_train_{k}") for k in keys}, SegTrainSettings())


def build_scratch_config(values: Mapping[str, Any]) -> Any:
    """The SegmentationConfig a training from scratch uses: defaults with ``channels``, ``patch_size_zyx``
    and ``spacing_mm`` (isotropic) from ``values`` (see :func:`lib.configs.pe_segmentation.network_config_from_conf`).

    Raises:
        ValueError: the values do not fit together (e.g. a patch not a multiple of the downsampling).
    """
    from insight.segmentation.config import SEG_PREPROCESS, SegmentationConfig, SegNetworkConfig

    base = SegmentationConfig()
    spacing = values.get("spacing_mm")
    return SegmentationConfig(
        preprocess=(dataclasses.replace(SEG_PREPROCESS, target_spacing_xyz=(spacing[0],) * 3) if spacing
                    else base.preprocess),
        network=SegNetworkConfig(channels=values["channels"]) if "channels" in values else base.network,
        patch_size_zyx=values.get("patch_size_zyx", base.patch_size_zyx))


class PESegmentationTrain(TrainTask):
    """MONAI Label train task for ``pe_segmentation``.

    Args:
        model_path: where the served checkpoint lives; the trainer publishes there.
        defaults: settings for request keys not given.
        device: ``auto``, ``cpu``, ``cuda``.
        conf_error: why ``--conf seg_*`` was not usable (shown in /info), if so.
        scratch_config: network settings of a training from scratch (``channels``, ``patch_size_zyx``,
            ``spacing_mm``; see :func:`lib.configs.pe_segmentation.network_config_from_conf`).
    """

    def __init__(self, model_path: str | Path, defaults: SegTrainSettings, device: str = "auto",
                 conf_error: str | None = None, scratch_config: dict[str, Any] | None = None) -> None:
        super().__init__("Trains pe_segmentation on the datastore's final labels (weighted up) and pseudo-masks; "
                         "publishes the new weights to the server without a restart")
        self.model_path = Path(model_path)
        self.defaults = defaults
        self.device = device
        self.conf_error = conf_error
        self.scratch_config = dict(scratch_config or {})

    def config(self) -> dict[str, Any]:
        return self.defaults.to_request()

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = {"final": FINAL_TAG, "pseudo": self.defaults.pseudo_tag}
        if self.conf_error:
            info["conf_error"] = self.conf_error
        return info

    def stats(self) -> dict[str, Any]:
        return read_stats_file(train_stats_path(self.model_path))

    # -- checks run by the app's /train route before a training process starts ----------------------
    def validate_request(self, request: Mapping[str, Any]) -> SegTrainSettings:
        return parse_settings(request, self.defaults)

    def labeled_images(self, datastore: Any, pseudo_tag: str) -> tuple[list[tuple[str, str, str]], list[str]]:
        """([(image id, label path, source)], [image ids without a usable label])."""
        found, left_out = [], []
        for image_id in datastore.list_images():
            tags = datastore.get_labels_by_image_id(image_id)
            for tag, source in ((FINAL_TAG, "final"), (pseudo_tag, "pseudo")):
                if tag in tags:
                    uri = datastore.get_label_uri(tags[tag], tag)
                    if uri and Path(uri).is_file():
                        found.append((image_id, uri, source))
                        break
            else:
                left_out.append(image_id)
        return found, left_out

    def check_trainable(self, datastore: Any, settings: SegTrainSettings | None = None) -> None:
        settings = settings or self.defaults
        found, _ = self.labeled_images(datastore, settings.pseudo_tag)
        if not found:
            raise InputError(f"pe_segmentation training needs images with a '{FINAL_TAG}' label or a "
                             f"'{settings.pseudo_tag}' pseudo-mask; the datastore has none (make pseudo-masks with "
                             "'insight pseudo-masks' and save them with tag "
                             f"'{settings.pseudo_tag}')")

    # -- the run (in MONAI Label's training subprocess) ----------------------------------------------
    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any]:
        started_wall = time.time()
        try:
            return self._train(request, datastore, started_wall)
        except Exception as err:
            message = str(err) if isinstance(err, InsightError) else f"{type(err).__name__}: {err}"
            self._record_error(message, started_wall)
            raise

    def _train(self, request: dict[str, Any], datastore: Any, started_wall: float) -> dict[str, Any]:
        from insight.segmentation.checkpoint import load_segmentation_checkpoint  # heavy imports
        from insight.segmentation.config import SegTrainConfig
        from insight.segmentation.dataset import LabeledVolume
        from insight.segmentation.job import SegTrainingJob, run_training

        settings = self.validate_request(request)
        self.check_trainable(datastore, settings)
        found, left_out = self.labeled_images(datastore, settings.pseudo_tag)
        train_config = SegTrainConfig(epochs=settings.epochs, learning_rate=settings.learning_rate,
                                      final_weight=settings.final_weight, seed=settings.seed,
                                      num_threads=settings.threads)
        cases = [LabeledVolume(image_id, Path(datastore.get_image_uri(image_id)), Path(uri), source,
                               train_config.weight_for(source)) for image_id, uri, source in found]

        config, init_weights, previous = build_scratch_config(self.scratch_config), None, None
        if settings.init == "current" and self.model_path.is_file():
            try:
                current = load_segmentation_checkpoint(self.model_path)
            except InsightError as err:
                logger.warning("pe_segmentation: served checkpoint not usable as a start (%s); training from scratch",
                               err)
            else:
                config, init_weights, previous = current.config, self.model_path, current.model_version
        run_dir = runs_dir(self.model_path) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        logger.info("pe_segmentation training: %d case(s) (%d final, %d pseudo), %d left out, %d epoch(s), "
                    "%d process(es), from %s, run %s", len(cases), sum(c.source == "final" for c in cases),
                    sum(c.source == "pseudo" for c in cases), len(left_out), settings.epochs, settings.nproc,
                    previous or "scratch", run_dir)
        job = SegTrainingJob(config, train_config, run_dir, self.device, init_weights=init_weights)
        summary = run_training(job, cases, nproc=settings.nproc)

        with atomic_output(self.model_path) as tmp:
            shutil.copyfile(summary.best_checkpoint, tmp)
        history = summary.history
        stats = {
            "status": "done", "model_version": load_segmentation_checkpoint(self.model_path).model_version,
            "previous_model_version": previous, "epochs": len(history),
            "train_loss": history[-1].get("train_loss") if history else None,
            "final_cases": sum(c.source == "final" for c in cases),
            "pseudo_cases": sum(c.source == "pseudo" for c in cases), "left_out": len(left_out),
            "final_weight": settings.final_weight, "nproc": settings.nproc,
            "iterations": summary.iterations, "seconds_per_iteration": round(summary.seconds_per_iteration, 4),
            "settings": settings.to_request(), "history": history, "checkpoint": str(self.model_path),
            "run_dir": str(run_dir), "started": _iso(started_wall), "finished": _iso(time.time()),
            "seconds": round(time.time() - started_wall, 2),
        }
        write_json_atomic(train_stats_path(self.model_path), stats)
        logger.info("pe_segmentation training done: published %s to %s", stats["model_version"], self.model_path)
        return stats

    def _record_error(self, message: str, started_wall: float) -> None:
        record_training_error(train_stats_path(self.model_path), "pe_segmentation", message, _iso(started_wall),
                              _iso(time.time()))


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
