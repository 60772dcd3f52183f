"""SlicerInsightLib: everything the SlicerInsight Slicer module does that needs no Slicer.

HTTP client for the MONAI Label server (:mod:`.client`), multipart parsing without ``cgi``
(:mod:`.multipart`), result models (:mod:`.results`), geometry between LPS and RAS and NIfTI/NRRD
headers (:mod:`.geometry`, :mod:`.nifti`), the overlay's color table and threshold helpers
(:mod:`.colormap`), the findings table (:mod:`.findings`), scan labels and label provenance
(:mod:`.labels`), and the one error family (:mod:`.errors`).

Runs in 3D Slicer's Python (3.9 to 3.12) and in plain CPython: standard library, ``requests`` and
numpy only (no torch, SimpleITK, nibabel or ``cgi``). Slicer does not load this folder as a module
(only ``SlicerInsight.py`` is one); ``SlicerInsight.py`` imports it.
"""

__version__ = "0.1.0"

from .errors import (AuthenticationError, InvalidInputError, MalformedAnswerError, NotFoundError,  # noqa: E402
                     NotOfferedError, NotReadyError, RequestRejectedError, ServerFailureError, ServerTimeoutError,
                     ServerUnreachableError, SlicerInsightError)

__all__ = [
    "__version__",
    "SlicerInsightError",
    "ServerUnreachableError",
    "ServerTimeoutError",
    "RequestRejectedError",
    "AuthenticationError",
    "NotFoundError",
    "ServerFailureError",
    "MalformedAnswerError",
    "NotOfferedError",
    "NotReadyError",
    "InvalidInputError",
]
