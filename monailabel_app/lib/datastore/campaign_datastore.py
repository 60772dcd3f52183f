"""MONAI Label's LocalDatastore, made safe for an annotation campaign.

What changes against ``monailabel.datastore.local.LocalDatastore`` (0.8.5):

- **Saving a label keeps the earlier one.** Before a new label file lands at
  ``labels/<tag>/<image><ext>`` (where MONAI Label clients expect it), the previous file is moved
  (``os.replace``, atomic on one file system) to
  ``<studies>/.insight/label_history/<tag>/<image>/v0001<ext>``; the new file is then copied in
  atomically. If that copy fails, the previous file is moved back. Removing a label archives it the
  same way instead of deleting it.
- **Every version is recorded** in the image's info under ``label_versions``:
  ``{tag: [{"version": 1, "file": "<path relative to the studies folder>", "current": bool,
  "ext": ".nii.gz", "ts": <unix s>, "provenance": {...}}, ...]}`` (provenance:
  :mod:`lib.datastore.provenance`). The current label's own info holds ``version`` and
  ``provenance`` too. Image infos survive a label's removal, so does its history.
- **The datastore file is written atomically** (``datastore_v2.json`` never half-written) and
  every read-modify-write happens under the datastore's file lock on the latest file contents, so
  the server and its training subprocesses do not overwrite each other's changes
  (:meth:`CampaignDatastore.update_image_infos`). Reads pick up another process's writes (a cheap
  ``stat`` of the file per call).
- Label tags must be plain names (letters, digits, ``_``, ``-``): MONAI Label would accept
  ``../x`` and write outside the labels folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.exception import ImageNotFoundException

from insight.errors import InputError
from insight.io.atomic import atomic_output, write_text_atomic
from lib.datastore.provenance import provenance_for_model_output

__all__ = ["CampaignDatastore", "LABEL_VERSIONS_KEY", "RUNTIME_DIR", "HISTORY_DIR", "check_label_tag"]

logger = logging.getLogger(__name__)

#: Image-info key of the per-tag version lists.
LABEL_VERSIONS_KEY = "label_versions"
#: Folder in the studies folder for everything this app keeps beside MONAI Label's own files.
RUNTIME_DIR = ".insight"
#: Earlier label versions, under RUNTIME_DIR.
HISTORY_DIR = "label_history"

_TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def check_label_tag(tag: str) -> str:
    """``tag`` if it is a plain name (letters, digits, ``_``, ``-``; at most 64), else InputError."""
    if not isinstance(tag, str) or not _TAG_PATTERN.match(tag):
        raise InputError(f"label tag must be a plain name (letters, digits, '_' or '-', at most 64), got {tag!r}")
    return tag


class CampaignDatastore(LocalDatastore):
    """A LocalDatastore with label versions, atomic metadata writes and locked read-modify-writes.

    Args: as ``LocalDatastore``. The history folder is ``<datastore_path>/.insight/label_history``.
    """

    def __init__(self, datastore_path: str, **kwargs: Any) -> None:
        # One reentrant lock object per datastore (a second FileLock object on the same file would
        # block its own thread); it must exist before LocalDatastore.__init__ reads the file.
        self._file_lock = FileLock(os.path.join(datastore_path, ".lock"))
        self._config_state: tuple[int, int, int] | None = None
        self._thread_lock = threading.RLock()
        super().__init__(datastore_path, **kwargs)
        #: The campaign's own state (label history, leases, scores index) beside the studies.
        self.runtime_dir = Path(datastore_path) / RUNTIME_DIR
        self.history_root = self.runtime_dir / HISTORY_DIR

    # -- reading and writing datastore_v2.json -------------------------------------------------------
    def _file_state(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._datastore_config_path)
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino, stat.st_size

    def _sync_from_disk(self, throw_exception: bool = False) -> None:
        """Reload datastore_v2.json when another writer replaced it (atomic files: no lock needed)."""
        state = self._file_state()
        if state is None or state == self._config_state:
            return
        try:
            text = Path(self._datastore_config_path).read_text(encoding="utf-8")
            model = LocalDatastoreModel.model_validate_json(text)
        except (OSError, ValueError) as err:
            logger.error("cannot load %s: %s", self._datastore_config_path, err)
            if throw_exception:
                raise
            return
        model.base_path = self._datastore_path
        self._datastore = model
        self._config_state = state

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        with self._thread_lock, self._file_lock:
            self._sync_from_disk(throw_exception)

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            write_text_atomic(self._datastore_config_path, text)
            self._config_state = self._file_state()

        if lock:
            with self._thread_lock, self._file_lock:
                write()
        else:
            write()

    def _reconcile_datastore(self) -> None:
        with self._thread_lock, self._file_lock:
            super()._reconcile_datastore()

    def update_image_infos(self, mutate: Callable[[dict[str, dict[str, Any]]], bool]) -> None:
        """Run ``mutate(infos)`` on the latest image infos, under the datastore lock.

        ``infos`` maps every image id to its live info dict; ``mutate`` changes them in place and
        returns True when it changed something (then the file is written, atomically).
        """
        with self._thread_lock, self._file_lock:
            self._sync_from_disk()
            infos = {image_id: obj.image.info for image_id, obj in self._datastore.objects.items()}
            if mutate(infos):
                self._update_datastore_file(lock=False)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """MONAI Label's shallow info update, as a locked read-modify-write on the latest file."""
        def merge(infos: dict[str, dict[str, Any]]) -> bool:
            if image_id not in infos:
                raise ImageNotFoundException(f"Image {image_id} not found")
            infos[image_id].update(info)
            return True

        self.update_image_infos(merge)

    # -- reads that must see other processes' writes -----------------------------------------------
    def get_image_info(self, image_id: str) -> dict[str, Any]:
        self._sync_from_disk()
        return super().get_image_info(image_id)

    def get_image_uri(self, image_id: str) -> str:
        self._sync_from_disk()
        return super().get_image_uri(image_id)

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        self._sync_from_disk()
        return super().get_label_info(label_id, label_tag)

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        self._sync_from_disk()
        return super().get_labels_by_image_id(image_id)

    def list_images(self) -> list[str]:
        self._sync_from_disk()
        return super().list_images()

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        self._sync_from_disk()
        return super().get_labeled_images(label_tag, labels)

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        self._sync_from_disk()
        return super().get_unlabeled_images(label_tag, labels)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        self._sync_from_disk()
        return super().datalist(full_path)

    def status(self) -> dict[str, Any]:
        self._sync_from_disk()
        return super().status()

    def json(self) -> dict[str, Any]:
        self._sync_from_disk()
        return super().json()

    def has_image(self, image_id: str) -> bool:
        """True when ``image_id`` is in the datastore."""
        self._sync_from_disk()
        return image_id in self._datastore.objects

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """MONAI Label's add_image, copying the file atomically and updating the latest metadata."""
        derived_id, image_ext = self._to_id(os.path.basename(image_filename))
        image_id = image_id or derived_id
        name = self._filename(image_id, image_ext)
        dest = Path(os.path.realpath(os.path.join(self._datastore.image_path(), name)))
        info = dict(image_info or {})
        info.update(ts=int(time.time()), name=name)
        with self._thread_lock, self._file_lock:
            self._sync_from_disk()
            with atomic_output(dest) as tmp:
                shutil.copyfile(image_filename, tmp)
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=image_ext))
            self._update_datastore_file(lock=False)
        logger.info("image %s added (%s)", image_id, name)
        return image_id

    # -- labels with history ---------------------------------------------------------------------------
    def _relative(self, path: Path) -> str:
        return os.path.relpath(path, self._datastore_path)

    def _archive_path(self, tag: str, image_id: str, version: int, ext: str) -> Path:
        return self.history_root / tag / image_id / f"v{version:04d}{ext}"

    def _archive_current(self, image_id: str, tag: str, versions: list[dict[str, Any]]) -> tuple[Path, Path] | None:
        """Move the current label file of (image, tag) into the history; returns (archived, original)."""
        obj = self._datastore.objects[image_id]
        label = obj.labels.get(tag)
        if label is None:
            return None
        current = Path(self._datastore.label_path(tag)) / self._filename(image_id, label.ext)
        if not current.is_file():
            return None
        entry = next((e for e in versions if e.get("current")), None)
        if entry is None:  # a label saved before versioning (or by hand): record it now
            entry = {"version": max((e["version"] for e in versions), default=0) + 1, "ext": label.ext,
                     "ts": label.info.get("ts"), "provenance": label.info.get("provenance")}
            versions.append(entry)
        archived = self._archive_path(tag, image_id, int(entry["version"]), label.ext)
        archived.parent.mkdir(parents=True, exist_ok=True)
        os.replace(current, archived)
        entry.update(current=False, file=self._relative(archived))
        return archived, current

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Save ``label_filename`` as the (image, tag) label; the previous one goes into the history.

        ``label_info["provenance"]`` (a dict, see :mod:`lib.datastore.provenance`) is recorded with
        the version; without it the label is recorded as the server's own (pseudo for a model's output).

        Raises:
            ImageNotFoundException: no such image.
            InputError: a tag that is not a plain name.
        """
        check_label_tag(label_tag)
        _, label_ext = self._to_id(os.path.basename(label_filename))
        info = dict(label_info or {})
        provenance = info.get("provenance")
        if not isinstance(provenance, dict):
            provenance = provenance_for_model_output(info).to_dict()
        with self._thread_lock, self._file_lock:
            self._sync_from_disk()
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise ImageNotFoundException(f"Image {image_id} not found")
            all_versions = dict(obj.image.info.get(LABEL_VERSIONS_KEY) or {})
            versions = [dict(e) for e in all_versions.get(label_tag, [])]
            moved = self._archive_current(image_id, label_tag, versions)
            name = self._filename(image_id, label_ext)
            dest = Path(self._datastore.label_path(label_tag)) / name
            try:
                with atomic_output(dest) as tmp:
                    shutil.copyfile(label_filename, tmp)
            except BaseException:
                if moved is not None:
                    os.replace(moved[0], moved[1])  # put the previous label back
                raise
            version = max((int(e["version"]) for e in versions), default=0) + 1
            now = int(time.time())
            info.update(ts=now, name=name, version=version, provenance=provenance)
            obj.labels[label_tag] = DataModel(info=info, ext=label_ext)
            versions.append({"version": version, "file": self._relative(dest), "current": True, "ext": label_ext,
                             "ts": now, "provenance": provenance})
            all_versions[label_tag] = versions
            obj.image.info[LABEL_VERSIONS_KEY] = all_versions
            self._update_datastore_file(lock=False)
        logger.info("label %s/%s saved as version %d (%s by %s)", label_tag, image_id, version,
                    provenance.get("method"), provenance.get("saved_by"))
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Archive the (image, tag) label into the history instead of deleting it."""
        with self._thread_lock, self._file_lock:
            self._sync_from_disk()
            obj = self._datastore.objects.get(label_id)
            if obj is None or label_tag not in obj.labels:
                logger.info("no %s label for %s to remove", label_tag, label_id)
                return
            all_versions = dict(obj.image.info.get(LABEL_VERSIONS_KEY) or {})
            versions = [dict(e) for e in all_versions.get(label_tag, [])]
            self._archive_current(label_id, label_tag, versions)
            for entry in versions:
                if entry.get("current"):
                    entry["current"] = False
            obj.labels.pop(label_tag, None)
            all_versions[label_tag] = versions
            obj.image.info[LABEL_VERSIONS_KEY] = all_versions
            self._update_datastore_file(lock=False)
        logger.info("label %s/%s removed (kept in the history)", label_tag, label_id)

    def label_versions(self, image_id: str, tag: str) -> list[dict[str, Any]]:
        """Every saved version of the (image, tag) label, oldest first (copies).

        Raises:
            ImageNotFoundException: no such image.
        """
        check_label_tag(tag)
        self._sync_from_disk()
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise ImageNotFoundException(f"Image {image_id} not found")
        return [dict(e) for e in (obj.image.info.get(LABEL_VERSIONS_KEY) or {}).get(tag, [])]

    def label_version_path(self, image_id: str, tag: str, version: int) -> Path | None:
        """The file of one version of the (image, tag) label, or None when there is no such version."""
        for entry in self.label_versions(image_id, tag):
            if int(entry.get("version", -1)) == version and entry.get("file"):
                path = Path(self._datastore_path) / entry["file"]
                return path if path.is_file() else None
        return None
