"""The faiss module, imported once with its loader's start-up notes kept out of the user's log.

faiss logs at INFO which CPU build it tried ("Could not load library with AVX2 support ...") on every
import; that is not a problem the user can act on, so its loader logs warnings only.
"""

from __future__ import annotations

import logging

logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402 - after the loader's log level is set

__all__ = ["faiss"]
