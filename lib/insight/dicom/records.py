"""Plain records shared by the ingest steps: notes (skip reasons, warnings), file headers, series.

Nothing here reads or writes files; the records are filled by :mod:`insight.dicom.discovery` and
read by selection, geometry, conversion and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Note", "DicomHeader", "SeriesGroup", "SkippedFile"]


@dataclass(frozen=True)
class Note:
    """A skip reason or a warning: a stable machine ``code`` and a human ``message``.

    Messages never hold identifying values (names, IDs, dates, UIDs), only counts, millimetres,
    degrees and DICOM keywords, so they can go into a de-identified manifest unchanged.
    """

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not part of any series: not DICOM, unreadable, a DICOMDIR, a duplicate..."""

    path: Path
    note: Note


@dataclass
class DicomHeader:
    """The header fields of one DICOM file that ingest needs (read with ``stop_before_pixels``).

    Geometry is in DICOM patient coordinates (LPS, mm): ``position`` is ImagePositionPatient (3,),
    ``orientation`` ImageOrientationPatient (6,: row direction cosines then column direction
    cosines), ``pixel_spacing`` PixelSpacing (2,: between rows, between columns). Missing values
    are ``None``. Identifying fields (``patient_id``, UIDs, dates) are used for grouping and sorting
    only and never written to a de-identified output.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    modality: str
    image_type: tuple[str, ...] = ()
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    pixel_spacing: tuple[float, float] | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int = 1
    samples_per_pixel: int = 1
    instance_number: int | None = None
    series_number: int | None = None
    series_description: str = ""
    study_date: str = ""
    study_time: str = ""
    burned_in_annotation: str = ""
    gantry_tilt_deg: float | None = None
    has_pixel_data: bool = False

    @property
    def is_localizer(self) -> bool:
        """ImageType says LOCALIZER (a scout / topogram)."""
        return "LOCALIZER" in self.image_type


@dataclass
class SeriesGroup:
    """The files of one series (one SeriesInstanceUID; localizer images split off into their own group)."""

    series_instance_uid: str
    files: list[DicomHeader] = field(default_factory=list)

    @property
    def first(self) -> DicomHeader:
        return self.files[0]

    @property
    def patient_id(self) -> str:
        return self.first.patient_id

    @property
    def study_instance_uid(self) -> str:
        return self.first.study_instance_uid
