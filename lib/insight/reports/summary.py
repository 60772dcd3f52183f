"""The structured JSON summary of a study's report, and the identity of its input.

Schema ``insight-report/1`` (all coordinates LPS millimetres, indices (i, j, k) on the input grid)::

    {"schema", "created" (UTC ISO 8601), "name",
     "input": {"kind": "dicom_series" | "file", "source", "grid": {size_xyz, spacing_xyz, origin_lps_mm,
               direction}, DICOM: study/series/frame-of-reference UIDs, modality, n_instances,
               sop_instance_uids_sha256; file: sha256, size_bytes},
     "model_version", "insight_version", "pe_probability", "finding_threshold",
     "findings": [Finding.to_dict(), ...], "qa": {...}, "key_slices": [...],
     "seg": null | {"file", "mode", "sop_instance_uid", "series_instance_uid", "segments", "frames",
                    "referenced_series_instance_uid", "stored"}, "files": {"summary", "montage", "seg"}}

The input identity holds UIDs and a digest, never names, IDs or dates, so a summary of a
de-identified series stays de-identified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import SimpleITK as sitk
from pydicom.dataset import Dataset

from insight import __version__

__all__ = ["REPORT_SCHEMA", "grid_identity", "dicom_identity", "file_identity", "build_summary"]

REPORT_SCHEMA = "insight-report/1"


def grid_identity(image: sitk.Image) -> dict[str, Any]:
    """The voxel grid of ``image``: size (voxels), spacing (mm), origin (LPS mm), direction (row-major 3x3)."""
    return {"size_xyz": list(image.GetSize()),
            "spacing_xyz": [round(float(v), 6) for v in image.GetSpacing()],
            "origin_lps_mm": [round(float(v), 4) for v in image.GetOrigin()],
            "direction": [round(float(v), 6) for v in image.GetDirection()]}


def dicom_identity(datasets: Sequence[Dataset], source: str) -> dict[str, Any]:
    """Identity of a DICOM series from its headers: UIDs, modality, instance count and digest."""
    first = datasets[0]
    sop_uids = sorted(str(d.SOPInstanceUID) for d in datasets)
    return {"kind": "dicom_series", "source": source,
            "study_instance_uid": str(first.get("StudyInstanceUID", "")),
            "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
            "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
            "modality": str(first.get("Modality", "")),
            "sop_class_uid": str(first.get("SOPClassUID", "")),
            "n_instances": len(datasets),
            "sop_instance_uids_sha256": hashlib.sha256("\n".join(sop_uids).encode("ascii")).hexdigest()}


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a single-file volume: its path, size and SHA-256."""
    p = Path(path)
    digest = hashlib.sha256()
    with p.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"kind": "file", "source": str(p), "size_bytes": p.stat().st_size, "sha256": digest.hexdigest()}


def build_summary(*, name: str, identity: dict[str, Any], image: sitk.Image, pe_probability: float,
                  model_version: str, finding_threshold: float, findings: list[dict[str, Any]],
                  qa: dict[str, Any], key_slices: list[dict[str, Any]], seg: dict[str, Any] | None,
                  files: dict[str, str | None]) -> dict[str, Any]:
    """The summary dict (plain JSON types) in the schema above."""
    return {
        "schema": REPORT_SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "name": name,
        "input": {**identity, "grid": grid_identity(image)},
        "model_version": model_version,
        "insight_version": __version__,
        "pe_probability": round(float(pe_probability), 6),
        "finding_threshold": float(finding_threshold),
        "findings": findings,
        "qa": qa,
        "key_slices": key_slices,
        "seg": seg,
        "files": files,
    }
