"""Choose which series become volumes: CT image series only, each skip with a reason.

Skipped, in this order of checks: structured reports (radiation dose reports apart), secondary
captures (screenshots, often dose pages with burned-in text), other SOP classes than CT Image
Storage (Enhanced CT included, not supported yet), localizers/scouts (ImageType LOCALIZER),
images marked BurnedInAnnotation=YES when de-identifying (pixel data would need cleaning), series
with fewer than ``min_slices`` images (tiny series: scouts, test shots, key images), and series
whose geometry cannot make one volume (see :func:`insight.dicom.geometry.analyze_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import UID

from insight.dicom.geometry import GeometryError, SeriesGeometry, analyze_geometry
from insight.dicom.records import Note, SeriesGroup

__all__ = ["SeriesChoice", "select_series", "check_series", "CT_IMAGE_STORAGE"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: SOP classes of radiation dose structured reports (X-ray RDSR, radiopharmaceutical, patient dose).
DOSE_REPORT_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.88.68",
                                 "1.2.840.10008.5.1.4.1.1.88.73"})
STRUCTURED_REPORT_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
SECONDARY_CAPTURE_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
                                       "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
                                       "1.2.840.10008.5.1.4.1.1.7.4"})
ENHANCED_CT_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})


@dataclass
class SeriesChoice:
    """The verdict on one series group: taken (with its geometry) or skipped (with ``reason``).

    ``flags`` are short markers for the manifest (``burned_in_annotation``), ``warnings`` notes on
    a taken series (geometry, derived images); ``interpolated_slices`` is filled by conversion.
    """

    group: SeriesGroup
    geometry: SeriesGeometry | None = None
    reason: Note | None = None
    warnings: list[Note] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    interpolated_slices: list[int] = field(default_factory=list)

    @property
    def taken(self) -> bool:
        return self.reason is None


def select_series(groups: list[SeriesGroup], min_slices: int, deidentify: bool) -> list[SeriesChoice]:
    """One :class:`SeriesChoice` per group, in the groups' order."""
    return [check_series(group, min_slices, deidentify) for group in groups]


def check_series(group: SeriesGroup, min_slices: int, deidentify: bool) -> SeriesChoice:
    """Judge one series group (see the module docstring for the rules)."""
    choice = SeriesChoice(group)
    files = group.files
    sop_classes = {f.sop_class_uid for f in files}
    sop_class = files[0].sop_class_uid
    if any(f.burned_in_annotation == "YES" for f in files):
        choice.flags.append("burned_in_annotation")
    if len(sop_classes) > 1:
        choice.reason = Note("mixed_sop_classes", f"series mixes {len(sop_classes)} SOP classes")
    elif sop_class in DOSE_REPORT_CLASSES:
        choice.reason = Note("dose_report", f"radiation dose report ({_class_name(sop_class)}), not an image")
    elif sop_class.startswith(STRUCTURED_REPORT_PREFIX):
        choice.reason = Note("structured_report", f"structured report ({_class_name(sop_class)}), not an image")
    elif sop_class in SECONDARY_CAPTURE_CLASSES:
        choice.reason = Note("secondary_capture", "secondary capture (screenshot or scanned page; may carry "
                                                  "burned-in identifying text)")
        if "burned_in_annotation" not in choice.flags:
            choice.flags.append("burned_in_annotation")
    elif sop_class in ENHANCED_CT_CLASSES:
        choice.reason = Note("unsupported_sop_class", f"{_class_name(sop_class)} (multi-frame) is not supported yet")
    elif sop_class != CT_IMAGE_STORAGE:
        choice.reason = Note("not_ct_image", f"{_class_name(sop_class)} (modality {files[0].modality or '?'}), "
                                             "not a CT image")
    elif any(f.is_localizer for f in files):
        choice.reason = Note("localizer", f"localizer / scout ({len(files)} image(s), ImageType LOCALIZER)")
    elif files[0].modality != "CT":
        choice.reason = Note("not_ct_modality", f"Modality is {files[0].modality or 'empty'}, not CT")
    elif deidentify and "burned_in_annotation" in choice.flags:
        choice.reason = Note("burned_in_annotation", "BurnedInAnnotation is YES: the pixels may show identifying "
                                                     "text and pixel cleaning is not implemented")
    elif len(files) < min_slices:
        choice.reason = Note("too_few_slices", f"{len(files)} image(s), fewer than --min-slices {min_slices}")
    if choice.reason is not None:
        return choice
    try:
        choice.geometry = analyze_geometry(files)
    except GeometryError as err:
        choice.reason = err.note
        return choice
    choice.warnings.extend(choice.geometry.warnings)
    if "burned_in_annotation" in choice.flags:
        choice.warnings.append(Note("burned_in_annotation", "BurnedInAnnotation is YES: the pixels may show "
                                                            "identifying text"))
    if any(f.image_type[:1] == ("DERIVED",) for f in files):
        choice.warnings.append(Note("derived_image", "ImageType DERIVED (a reformat or processed series)"))
    return choice


def _class_name(sop_class: str) -> str:
    name = UID(sop_class).name
    return name if name and name != sop_class else f"SOP class {sop_class}"
