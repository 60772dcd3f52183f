"""Leases: an image handed to one annotator is not handed to another at the same time.

``POST /activelearning/{strategy}`` grants the chosen image to the asking client (the
``client_id`` MONAI Label clients send in the request body; the user name without one) for
``lease_timeout_s`` seconds. While a lease runs, strategies do not see the image for any other
client. A client holds at most one lease: asking for the next sample gives its previous image back.
Saving a ``final`` label for the image releases the lease; so does
``DELETE /insight/leases/{image}``.

Leases survive a server restart: the app keeps them in ``<studies>/.insight/leases.json`` (for a
DICOMweb server, in the datastore's cache folder), rewritten atomically on every change. A lease
that expired while the server was down is dropped when the file is read; an unreadable file is
moved aside (``leases.json.unreadable-<time>``) with a warning and the server starts with none.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from insight.io.atomic import write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["Lease", "LeaseBook", "LeaseFilteredDatastore", "DEFAULT_LEASE_TIMEOUT_S", "LEASES_FILE"]

#: The file, in the campaign's runtime folder, that keeps leases across restarts.
LEASES_FILE = "leases.json"

#: How long an image stays with the annotator it was handed to, without a saved label.
DEFAULT_LEASE_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Lease:
    """``image_id`` is with ``client_id`` from ``granted_at`` until ``expires_at`` (unix seconds)."""

    image_id: str
    client_id: str
    granted_at: float
    expires_at: float
    strategy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "granted_at": round(self.granted_at, 3), "expires_at": round(self.expires_at, 3)}

    @classmethod
    def from_dict(cls, item: Any) -> "Lease":
        """The inverse of :meth:`to_dict`. Raises ValueError, TypeError or KeyError for a malformed item."""
        if not isinstance(item, dict) or not isinstance(item.get("image_id"), str) \
                or not isinstance(item.get("client_id"), str):
            raise ValueError(f"not a lease: {item!r}")
        strategy = item.get("strategy")
        return cls(item["image_id"], item["client_id"], float(item["granted_at"]), float(item["expires_at"]),
                   strategy if isinstance(strategy, str) else None)


class LeaseBook:
    """Thread-safe image -> lease table with expiry.

    Args:
        timeout_s: lease length in seconds (> 0).
        clock: the time source (unix seconds), for tests.
        path: a JSON file that keeps the leases across restarts (see :meth:`persist_to`); None keeps
            them in memory only.
    """

    def __init__(self, timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, clock: Callable[[], float] = time.time,
                 path: str | os.PathLike | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"lease timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        self.lock = threading.RLock()
        self.path: Path | None = None
        if path is not None:
            self.persist_to(path)

    def persist_to(self, path: str | os.PathLike) -> None:
        """Keep the leases in ``path`` from now on: read the leases it holds (expired ones dropped,
        merged into those in memory), then rewrite it atomically after every change."""
        with self.lock:
            self.path = Path(path)
            for lease in self._read(self.path):
                self._leases.setdefault(lease.image_id, lease)
            self._prune(force_save=True)

    def _read(self, path: Path) -> list[Lease]:
        if not path.is_file():
            return []
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            items = payload["leases"] if isinstance(payload, dict) else None
            if not isinstance(items, list):
                raise ValueError("no 'leases' list")
            return [Lease.from_dict(item) for item in items]
        except (OSError, ValueError, TypeError, KeyError) as err:
            aside = path.with_name(f"{path.name}.unreadable-{int(self._clock())}")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            logger.warning("lease file %s is unreadable (%s): starting without leases; the file is kept as %s",
                           path, err, aside)
            return []

    def _save(self) -> None:
        if self.path is None:
            return
        payload = {"timeout_s": self.timeout_s, "leases": [lease.to_dict() for lease in self._leases.values()]}
        try:
            write_json_atomic(self.path, payload)
        except OSError as err:  # a full disk must not stop annotators: the leases still hold in memory
            logger.error("could not save leases to %s: %s", self.path, err)

    def _prune(self, force_save: bool = False) -> None:
        now = self._clock()
        expired = [i for i, lease in self._leases.items() if lease.expires_at <= now]
        for image_id in expired:
            del self._leases[image_id]
        if expired or force_save:
            self._save()

    def active(self) -> list[Lease]:
        """Every lease still running, soonest expiry first."""
        with self.lock:
            self._prune()
            return sorted(self._leases.values(), key=lambda lease: lease.expires_at)

    def held_by(self, client_id: str) -> set[str]:
        """Images leased to ``client_id``."""
        return {lease.image_id for lease in self.active() if lease.client_id == client_id}

    def held_by_others(self, client_id: str) -> set[str]:
        """Images leased to any client but ``client_id``."""
        return {lease.image_id for lease in self.active() if lease.client_id != client_id}

    def grant(self, image_id: str, client_id: str, strategy: str | None = None) -> Lease:
        """Lease ``image_id`` to ``client_id`` (replacing that client's other leases).

        Raises:
            ValueError: the image is leased to another client.
        """
        with self.lock:
            self._prune()
            holder = self._leases.get(image_id)
            if holder is not None and holder.client_id != client_id:
                raise ValueError(f"image {image_id!r} is leased to another client until {holder.expires_at:.0f}")
            for other in [i for i, lease in self._leases.items() if lease.client_id == client_id]:
                del self._leases[other]
            now = self._clock()
            lease = Lease(image_id, client_id, now, now + self.timeout_s, strategy)
            self._leases[image_id] = lease
            self._save()
            return lease

    def release(self, image_id: str, client_id: str | None = None) -> Lease | None:
        """End the lease on ``image_id`` (only if held by ``client_id``, when given); returns it."""
        with self.lock:
            self._prune()
            lease = self._leases.get(image_id)
            if lease is None or (client_id is not None and lease.client_id != client_id):
                return None
            self._leases.pop(image_id)
            self._save()
            return lease


class LeaseFilteredDatastore:
    """A read view of a datastore in which some images are not offered for labeling.

    Strategies (MONAI Label's included) pick from ``get_unlabeled_images()``; this view leaves out
    ``excluded`` (images leased to other clients) and, while others remain, ``avoid`` (the asking
    client's own current image: "next" means another one). Everything else goes to the datastore.
    """

    def __init__(self, datastore: Any, excluded: Iterable[str], avoid: Iterable[str] = ()) -> None:
        self._datastore = datastore
        self.excluded = frozenset(excluded)
        self.avoid = frozenset(avoid)

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        images = [i for i in self._datastore.get_unlabeled_images(label_tag, labels) if i not in self.excluded]
        preferred = [i for i in images if i not in self.avoid]
        return preferred or images

    @property
    def leased_images(self) -> frozenset[str]:
        """Images currently with an annotator (other clients' and the asking client's own)."""
        return self.excluded | self.avoid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._datastore, name)
