"""REST routes for the image leases of active learning (:mod:`lib.activelearning.leases`).

- ``GET /insight/leases``: ``{"timeout_s", "leases": [{"image_id", "client_id", "granted_at",
  "expires_at", "strategy"}]}`` (unix seconds).
- ``DELETE /insight/leases/{image}?client_id=<id>``: give an image back (an annotator skips it);
  with ``client_id`` only that client's lease ends. Answers ``{"released": lease | null}``.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

__all__ = ["router"]

router = APIRouter(prefix="/insight/leases", tags=["SlicerInsight: active learning"])


def _leases():
    leases = getattr(app_instance(), "leases", None)
    if leases is None:
        raise HTTPException(status_code=501, detail="this app keeps no leases")
    return leases


@router.get("", summary="Images currently handed to an annotator")
def api_leases(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    leases = _leases()
    return {"timeout_s": leases.timeout_s, "leases": [lease.to_dict() for lease in leases.active()]}


@router.delete("/{image}", summary="Give an image back before its lease ends")
def api_release_lease(image: str, client_id: Optional[str] = None,
                      user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
    lease = _leases().release(image, client_id)
    return {"released": lease.to_dict() if lease else None}
