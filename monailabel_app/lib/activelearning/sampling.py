"""The next sample for one client: run a strategy on the images no other client holds, then lease it.

Used by the app's ``next_sample`` (``POST /activelearning/{strategy}``); see
:mod:`lib.activelearning.leases` for the lease rules.
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.tasks.strategy import Strategy

from lib.activelearning.leases import LeaseBook, LeaseFilteredDatastore

__all__ = ["next_sample_with_lease", "ANONYMOUS_CLIENT"]

logger = logging.getLogger(__name__)

#: The client a request without ``client_id`` (and without a user name) counts as.
ANONYMOUS_CLIENT = "anonymous"


def next_sample_with_lease(strategy: Strategy, request: dict[str, Any], datastore: Any,
                           leases: LeaseBook) -> dict[str, Any]:
    """Run ``strategy`` for ``request["client_id"]`` and lease the image it picks to that client.

    Returns the strategy's answer plus ``path`` and ``lease`` (``{}`` when no image is free). The
    strategy and the lease run under the lease book's lock, so two clients asking at once never
    get the same image.

    Raises whatever the strategy raises (e.g. ``StrategyUnavailable``).
    """
    client_id = str(request.get("client_id") or ANONYMOUS_CLIENT)
    with leases.lock:
        view = LeaseFilteredDatastore(datastore, excluded=leases.held_by_others(client_id),
                                      avoid=leases.held_by(client_id))
        result = strategy(request, view)
        if not result or not result.get("id"):
            logger.info("next sample (%s) for %s: no image free (%d with other clients)", request.get("strategy"),
                        client_id, len(view.excluded))
            return {}
        lease = leases.grant(result["id"], client_id, request.get("strategy"))
    answer = dict(result)
    answer["path"] = datastore.get_image_uri(answer["id"])
    answer["lease"] = lease.to_dict()
    logger.info("next sample (%s) for %s: %s, leased for %.0f s", request.get("strategy"), client_id, answer["id"],
                leases.timeout_s)
    return answer
