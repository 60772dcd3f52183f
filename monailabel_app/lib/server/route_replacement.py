"""Replace one of MONAI Label's routes on the running FastAPI app with an equivalent endpoint.

The new route keeps the old one's path, method, summary, description, tags, documented responses
and name, so clients and the OpenAPI document see the same API; only the function serving it changes.
Routes are found by their endpoint function, wherever FastAPI keeps them (flattened into the app's
routes, or in an included router that newer FastAPI versions keep by reference).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from monailabel.config import settings

__all__ = ["replace_endpoint", "server_app", "include_routers_once"]

logger = logging.getLogger(__name__)


def server_app() -> FastAPI:
    """MONAI Label's FastAPI application (``monailabel.app.app``)."""
    from monailabel.app import app

    return app


def include_routers_once(app: FastAPI, routers: Iterable[APIRouter], state_flag: str) -> bool:
    """Add ``routers`` under MONAI Label's API prefix unless ``app.state.<state_flag>`` says they are
    in already (installing twice must not duplicate routes). True when they were added now."""
    if getattr(app.state, state_flag, False):
        return False
    for router in routers:
        app.include_router(router, prefix=settings.MONAI_LABEL_API_STR)
    setattr(app.state, state_flag, True)
    app.openapi_schema = None  # FastAPI rebuilds the OpenAPI document with the new routes
    return True


def _route_lists(router: Any, seen: set[int] | None = None) -> Iterator[tuple[Any, list]]:
    """(router, its routes list) for ``router`` and every router included in it by reference."""
    seen = set() if seen is None else seen
    if id(router) in seen:
        return
    seen.add(id(router))
    yield router, router.routes
    for route in list(router.routes):
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _route_lists(included, seen)


def replace_endpoint(app: FastAPI, old_endpoint: Callable, new_endpoint: Callable, method: str) -> bool:
    """Serve every ``method`` route of ``old_endpoint`` with ``new_endpoint`` instead.

    Idempotent. Returns True when at least one route was replaced, False when none was found (or
    they already were: a warning is logged only when none was ever there).
    """
    replaced = already = False
    for owner, routes in _route_lists(app.router):
        for index, route in enumerate(routes):
            if not (isinstance(route, APIRoute) and method in route.methods):
                continue
            if route.endpoint is new_endpoint:
                already = True
                continue
            if route.endpoint is not old_endpoint:
                continue
            routes[index] = _equivalent_route(route, new_endpoint, method)
            replaced = True
            mark_changed = getattr(owner, "_mark_routes_changed", None)
            if callable(mark_changed):  # newer FastAPI caches the routes of included routers by version
                mark_changed()
            logger.info("%s %s is now served by %s.%s", method, route.path, new_endpoint.__module__,
                        new_endpoint.__name__)
    if replaced:
        app.openapi_schema = None
    elif not already:
        logger.warning("route %s %s not found: not replaced", method, getattr(old_endpoint, "__name__", old_endpoint))
    return replaced


def _equivalent_route(old: APIRoute, endpoint: Callable, method: str) -> APIRoute:
    router = APIRouter(route_class=type(old))
    router.add_api_route(old.path, endpoint, methods=[method], summary=old.summary, description=old.description,
                         tags=old.tags, responses=old.responses, name=old.name,
                         include_in_schema=old.include_in_schema)
    return router.routes[0]
