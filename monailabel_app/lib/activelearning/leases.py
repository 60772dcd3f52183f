"""Leases: an image handed to one annotator is not handed to another at the same time.

``POST /activelearning/{strategy}`` grants the chosen image to the asking client (the
``client_id`` MONAI Label clients send in the request body; the user name without one) for
``lease_timeout_s`` seconds. While a lease runs, strategies do not see the image for any other
client. A client holds at most one lease: asking for the next sample gives its previous image back.
Saving a ``final`` label for the image releases the lease; so does
``DELETE /insight/leases/{image}``. Leases live in the server's memory (a restart clears them).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

__all__ = ["Lease", "LeaseBook", "LeaseFilteredDatastore", "DEFAULT_LEASE_TIMEOUT_S"]

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


class LeaseBook:
    """Thread-safe image -> lease table with expiry.

    Args:
        timeout_s: lease length in seconds (> 0).
        clock: the time source (unix seconds), for tests.
    """

    def __init__(self, timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, clock: Callable[[], float] = time.time) -> None:
        if not timeout_s > 0:
            raise ValueError(f"lease timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        self.lock = threading.RLock()

    def _prune(self) -> None:
        now = self._clock()
        for image_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            del self._leases[image_id]

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
            return lease

    def release(self, image_id: str, client_id: str | None = None) -> Lease | None:
        """End the lease on ``image_id`` (only if held by ``client_id``, when given); returns it."""
        with self.lock:
            self._prune()
            lease = self._leases.get(image_id)
            if lease is None or (client_id is not None and lease.client_id != client_id):
                return None
            return self._leases.pop(image_id)


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
