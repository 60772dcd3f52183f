"""``POST /activelearning/{strategy}`` with leases and readable errors.

Same path and body as MONAI Label's (``{"client_id": "...", ...}``); the replacement:

- 404 for an unknown strategy (the message lists the ones there are); 409 when the strategy cannot
  choose on this server now (``disagreement`` without ``pe_segmentation``, scores not computed yet),
  with what to do; 422 for a ``client_id`` that is not a string;
- leases the chosen image to the client (``client_id``; the user name without one) so that no
  other client gets it meanwhile (:mod:`lib.activelearning.leases`);
- records ``strategy.<name> = {ts, client_id}`` in the image info, as MONAI Label does;
- answers the strategy's pick (``id``, ``path``, ``score``...), its ``lease``, and the image info
  (embedding vectors left out); ``{}`` when no image is free. Runs in a worker thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from fastapi import Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from insight.errors import InsightError
from lib.activelearning.strategies import StrategyUnavailable
from lib.scoring.scores import without_embeddings

__all__ = ["api_sample_leased", "sample_with_lease"]

logger = logging.getLogger(__name__)


def sample_with_lease(strategy: str, params: dict[str, Any], username: str | None) -> dict[str, Any]:
    instance = app_instance()
    strategies = instance.info().get("strategies", {})
    if strategy not in strategies:
        raise HTTPException(status_code=404, detail=f"no active-learning strategy {strategy!r} on this server "
                                                    f"(available: {', '.join(sorted(strategies)) or 'none'})")
    client_id = params.get("client_id") or username
    if client_id is not None and not isinstance(client_id, str):
        raise HTTPException(status_code=422, detail=f"client_id must be a string, got {type(client_id).__name__}")
    request = {**params, "strategy": strategy, "client_id": client_id}
    try:
        result = instance.next_sample(request)
    except StrategyUnavailable as err:
        raise HTTPException(status_code=409, detail=str(err)) from err
    except InsightError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    except MONAILabelException as err:
        raise HTTPException(status_code=400, detail=str(err.msg)) from err
    if not result:
        return {}

    image_id = result["id"]
    datastore = instance.datastore()

    def record(infos: dict[str, dict[str, Any]]) -> bool:
        if image_id not in infos:
            return False
        served = dict(infos[image_id].get("strategy") or {})
        served[strategy] = {"ts": int(time.time()), "client_id": client_id}
        infos[image_id]["strategy"] = served
        return True

    try:
        datastore.update_image_infos(record)
    except Exception as err:  # bookkeeping only: the sample stands
        logger.warning("could not record the strategy in %s's info: %s", image_id, err)
    return {**without_embeddings(datastore.get_image_info(image_id)), **result}


async def api_sample_leased(
    strategy: str,
    params: Optional[dict] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    """The next image for this client to label, leased to it."""
    return await run_in_threadpool(sample_with_lease, strategy, params or {}, user.username)
