"""Config of the ``pe_segmentation`` task: where its checkpoint lives, its trainer's defaults.

Conf options (``monailabel start_server ... --conf KEY VALUE``):

- ``seg_model_path``: the segmentation checkpoint, read by infer and (re)written by the trainer.
  Default ``<app>/model/pe_segmentation.pt``. It may not exist yet: the task is listed anyway and
  infer answers "not trained yet" until training (or ``insight train-seg``) puts one there.
- ``device``: ``auto`` (default), ``cpu``, ``cuda`` or ``cuda:N`` (shared with ``pe_insight``).
- ``seg_train_epochs``, ``seg_train_learning_rate``, ``seg_train_final_weight``, ``seg_train_seed``,
  ``seg_train_nproc``, ``seg_train_init``, ``seg_train_threads``, ``seg_train_pseudo_tag``: the
  trainer's defaults (:mod:`lib.trainers.pe_segmentation`).
- ``seg_channels`` (e.g. ``8,16,32,64``), ``seg_patch`` (``64,64,64``, voxels z,y,x) and ``seg_spacing_mm``
  (``2``): the network a training from scratch builds (a fine-tuning keeps the served one's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig

from insight.errors import InputError
from lib.infers.pe_segmentation import SEG_LABELS, PESegmentationInfer
from lib.trainers.pe_segmentation import (PESegmentationTrain, SegTrainSettings, build_scratch_config,
                                          seg_settings_from_conf)

__all__ = ["PESegmentationConfig", "resolve_seg_model_path", "network_config_from_conf", "DEFAULT_SEG_MODEL_NAME"]

logger = logging.getLogger(__name__)

DEFAULT_SEG_MODEL_NAME = "pe_segmentation.pt"


def network_config_from_conf(conf: dict[str, str]) -> dict[str, Any]:
    """``seg_channels`` / ``seg_patch`` / ``seg_spacing_mm`` as SegmentationConfig fields (only those given).

    Raises:
        InputError: a value is not a comma-separated list of positive numbers, or they do not fit together.
    """
    values: dict[str, Any] = {}
    for key, field, kind, count in (("seg_channels", "channels", int, None), ("seg_patch", "patch_size_zyx", int, 3),
                                    ("seg_spacing_mm", "spacing_mm", float, 1)):
        raw = conf.get(key)
        if not raw:
            continue
        try:
            numbers = tuple(kind(v) for v in str(raw).split(","))
        except ValueError:
            raise InputError(f"{key} must be comma-separated numbers, got {raw!r}") from None
        if (count is not None and len(numbers) != count) or any(v <= 0 for v in numbers):
            raise InputError(f"{key} must be {count or 'some'} positive number(s), got {raw!r}")
        values[field] = numbers
    try:
        build_scratch_config(values)
    except ValueError as err:
        raise InputError(str(err)) from err
    return values


def resolve_seg_model_path(conf: dict[str, str] | None, model_dir: str | Path) -> Path:
    """``--conf seg_model_path`` (relative to the server's working directory), else
    ``<model_dir>/pe_segmentation.pt``."""
    value = (conf or {}).get("seg_model_path")
    return Path(value).expanduser().resolve() if value else Path(model_dir) / DEFAULT_SEG_MODEL_NAME


class PESegmentationConfig(TaskConfig):
    """Wires the ``pe_segmentation`` infer task and trainer to one checkpoint path."""

    def __init__(self) -> None:
        super().__init__()
        self.device = "auto"
        self.train_defaults = SegTrainSettings()
        self.train_conf_error: str | None = None
        self.network_config: dict[str, Any] = {}

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        conf = conf or {}
        self.path = resolve_seg_model_path(conf, model_dir)
        self.device = conf.get("device", "auto") or "auto"
        self.labels = dict(SEG_LABELS)
        try:
            self.train_defaults = seg_settings_from_conf(conf)
            self.network_config = network_config_from_conf(conf)
        except InputError as err:  # the server still starts; /info shows the trainer's conf_error
            self.train_conf_error = f"--conf seg_*: {err}; using the defaults"
            logger.error("%s: %s", name, self.train_conf_error)
        logger.info("%s: checkpoint %s (%s)", name, self.path, "present" if self.path.is_file() else "not trained yet")

    def infer(self) -> dict[str, PESegmentationInfer]:
        return {self.name: PESegmentationInfer(self.path, device=self.device)}

    def trainer(self) -> PESegmentationTrain:
        return PESegmentationTrain(self.path, self.train_defaults, device=self.device, conf_error=self.train_conf_error,
                                   scratch_config=self.network_config)
