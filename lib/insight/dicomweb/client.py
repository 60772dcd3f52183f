"""A small DICOMweb client: find a study's series (QIDO-RS), fetch them (WADO-RS), store (STOW-RS).

Wraps ``dicomweb_client.DICOMwebClient`` with a request timeout and with errors a user can act on:
an unreachable server, an unknown study or series, a refused store become
:class:`~insight.errors.InsightError` / :class:`~insight.errors.InputError` with one clear line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlparse

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from insight.errors import InputError, InsightError

__all__ = ["SeriesInfo", "PacsClient", "DEFAULT_TIMEOUT_S", "DEFAULT_ATTEMPTS"]

logger = logging.getLogger(__name__)

#: Seconds one HTTP request may take (connect and each read) before the client gives up.
DEFAULT_TIMEOUT_S = 120.0
#: Attempts per request: dicomweb-client retries failed connections and HTTP 408/429/503/504 with
#: exponential back-off (2 s, 4 s, ...), so an unreachable server is reported after about 6 s.
DEFAULT_ATTEMPTS = 3
_SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study as QIDO-RS describes it (``n_instances`` None when the server omits it)."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    description: str
    n_instances: int | None


class _TimeoutSession(requests.Session):
    """A requests session whose requests time out after ``timeout_s`` unless told otherwise."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)


class PacsClient:
    """DICOMweb access to one server.

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        timeout_s: per-request timeout, seconds.
        attempts: tries per request (1: no retry); see :data:`DEFAULT_ATTEMPTS`.
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``).
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS,
                 headers: dict[str, str] | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"--url must be an http(s) DICOMweb root such as http://host:8042/dicom-web, got {url!r}")
        self.url = url.rstrip("/")
        if attempts < 1:
            raise InputError(f"attempts must be at least 1, got {attempts}")
        self._client = DICOMwebClient(url=self.url, session=_TimeoutSession(timeout_s), headers=headers)
        self._client.set_http_retry_params(retry=attempts > 1, max_attempts=attempts)

    def find_series(self, study_instance_uid: str) -> list[SeriesInfo]:
        """The series of a study (QIDO-RS).

        Raises:
            InputError: the server knows no such study.
        """
        with self._errors(f"search of study {study_instance_uid}"):
            found = self._client.search_for_series(study_instance_uid=study_instance_uid,
                                                   fields=list(_SERIES_FIELDS), get_remaining=True)
        series = [_series_info(item) for item in found or []]
        series = [s for s in series if s.series_instance_uid]
        if not series:
            raise InputError(f"study {study_instance_uid} not found on {self.url} (no series)")
        return series

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        """All instances of a series as pydicom datasets (WADO-RS)."""
        with self._errors(f"retrieval of series {series_instance_uid}"):
            datasets = self._client.retrieve_series(study_instance_uid, series_instance_uid)
        if not datasets:
            raise InputError(f"series {series_instance_uid} of study {study_instance_uid} has no instances on {self.url}")
        logger.info("retrieved %d instance(s) of series %s", len(datasets), series_instance_uid)
        return list(datasets)

    def store(self, datasets: Sequence[Dataset]) -> list[str]:
        """Store instances (STOW-RS); returns the SOPInstanceUIDs the server accepted.

        Raises:
            InsightError: the server refused any instance.
        """
        if not datasets:
            return []
        with self._errors("store"):
            response = self._client.store_instances(list(datasets))
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise InsightError(f"{self.url} refused {len(failed)} of {len(datasets)} instance(s) "
                               f"(DICOM failure reason {', '.join(reasons)})")
        stored = [str(item.ReferencedSOPInstanceUID) for item in (response.get("ReferencedSOPSequence") or [])]
        logger.info("stored %d instance(s) on %s", len(stored) or len(datasets), self.url)
        return stored or [str(d.SOPInstanceUID) for d in datasets]

    def store_folder(self, folder: str | os.PathLike, batch: int = 50) -> list[str]:
        """Store every DICOM file under ``folder`` (recursively; other files are skipped)."""
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"{root} is not a folder")
        datasets, stored = [], []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                datasets.append(pydicom.dcmread(path))
            except Exception:  # not DICOM: skipped
                logger.debug("store_folder: skipping %s (not DICOM)", path)
                continue
            if len(datasets) >= batch:
                stored += self.store(datasets)
                datasets = []
        stored += self.store(datasets)
        if not stored:
            raise InputError(f"{root}: no DICOM file to store")
        return stored

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except requests.exceptions.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status == 404:
                raise InputError(f"{what}: not found on {self.url} (HTTP 404)") from err
            detail = _response_text(err.response)
            raise InsightError(f"{what} on {self.url} failed: HTTP {status}{': ' + detail if detail else ''}") from err
        except requests.exceptions.Timeout as err:
            raise InsightError(f"{what}: {self.url} did not answer in time") from err
        except requests.exceptions.ConnectionError as err:
            raise InsightError(f"cannot reach the DICOMweb server at {self.url} ({type(err).__name__})") from err
        except requests.exceptions.RequestException as err:
            raise InsightError(f"{what} on {self.url} failed: {err}") from err


def _series_info(item: dict) -> SeriesInfo:
    """A QIDO-RS DICOM JSON series record to :class:`SeriesInfo`."""
    def value(tag: str) -> object:
        values = (item.get(tag) or {}).get("Value") or [None]
        return values[0]

    number, count = value("00200011"), value("00201209")
    return SeriesInfo(series_instance_uid=str(value("0020000E") or ""), modality=str(value("00080060") or ""),
                      series_number=int(number) if number not in (None, "") else None,
                      description=str(value("0008103E") or ""),
                      n_instances=int(count) if count not in (None, "") else None)


def _response_text(response: requests.Response | None) -> str:
    if response is None:
        return ""
    text = " ".join((response.text or "").split())
    return text[:200]
