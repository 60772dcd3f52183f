"""``ingest(src, dst, options)``: DICOM tree in, de-identified volumes, DICOM copies and a manifest out.

Steps: discover (headers of every file) -> group by series -> select CT image series -> for each
taken series decode the slices, build the volume on its exact grid and write
``volumes/<case>.nii.gz`` (int16 HU), then the (de-identified) DICOM copies
``dicom/<case>/IM0001.dcm ...`` in slice order -> ``manifest.json`` last.

Output names ``<case>`` are ``p001-st01-se01`` (patient, study, series ordinals in a stable order
derived from the input), never identifying values.

Re-running into the same DST: every volume is replaced atomically and every DICOM folder is
written beside its final place and swapped in, so a crash never leaves a half-written file where
an output belongs. The manifest is written last; outputs listed in the previous manifest that this
run does not produce are deleted; nothing else in DST is touched. Over the same input with the same
secret and date option, a re-run gives the same files; without a secret, UIDs, pseudonyms and random
date offsets differ between runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from insight import __version__
from insight.dicom.conversion import SliceReadError, build_volume, read_slice_hu
from insight.dicom.deid import PROFILE_REVISION, Deidentifier, DeidOptions
from insight.dicom.discovery import discover, group_series
from insight.dicom.geometry import GeometryError, analyze_geometry
from insight.dicom.manifest import SCHEMA, read_previous_outputs, remove_stale_outputs, write_manifest
from insight.dicom.records import DicomHeader, Note, SeriesGroup, SkippedFile
from insight.dicom.selection import SeriesChoice, select_series
from insight.errors import InputError, InsightError
from insight.io import write_image

__all__ = ["IngestOptions", "ingest"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    """Options of one ingest run.

    Attributes:
        deidentify: apply the Basic Profile (default); False keeps identities (explicit choice).
        write_dicom: also write DICOM copies (de-identified when ``deidentify``).
        date_mode: ``"shift"`` or ``"remove"`` (only with ``deidentify``).
        shift_days: fixed offset in days for every patient; None: random per patient.
        secret: key for UID remapping, pseudonyms and random offsets; None: random, per run.
        min_slices: series with fewer images are skipped (tiny series), at least 2.
    """

    deidentify: bool = True
    write_dicom: bool = True
    date_mode: str = "shift"
    shift_days: int | None = None
    secret: bytes | None = None
    min_slices: int = 5


def ingest(src: str | os.PathLike, dst: str | os.PathLike, options: IngestOptions = IngestOptions()) -> dict:
    """Ingest the DICOM tree ``src`` into ``dst``; returns the manifest (also written to ``dst``).

    Raises:
        InputError: ``src`` is missing or not a folder, ``dst`` is inside ``src`` or not writable,
            ``dst`` holds a foreign manifest.json, or no CT image series could be converted.
    """
    src_path, dst_path = _check_paths(Path(src), Path(dst))
    if options.min_slices < 2:
        raise InputError(f"--min-slices must be at least 2, got {options.min_slices}")
    previous_outputs = read_previous_outputs(dst_path) if dst_path.exists() else set()

    found = discover(src_path)
    choices = select_series(group_series(found.headers), options.min_slices, options.deidentify)
    if not any(c.taken for c in choices):
        raise InputError(f"no CT image series found in {src_path} ({_summary(found.n_seen, found.skipped, choices)})")

    deidentifier = None
    if options.deidentify:
        deidentifier = Deidentifier(DeidOptions(secret=options.secret or secrets.token_bytes(32),
                                                date_mode=options.date_mode, shift_days=options.shift_days))
    _prepare_dst(dst_path)
    names = _case_names(choices)
    skipped_files: list[tuple[SkippedFile, str | None]] = [(s, None) for s in found.skipped]
    entries = []
    try:
        for choice in choices:
            case = names[id(choice)]
            if choice.taken:
                dropped = _convert_series(choice, case, dst_path, options, deidentifier)
                skipped_files.extend((s, case) for s in dropped)
            entries.append(_series_entry(choice, case, options, deidentifier))
            _log_choice(choice, case)
    except OSError as err:
        raise InsightError(f"cannot write to {dst_path}: {err.strerror or err}") from err

    taken = [e for e in entries if e["status"] == "taken"]
    if not taken:
        raise InputError(f"no CT image series could be converted from {src_path} "
                         f"({_summary(found.n_seen, found.skipped, choices)})")
    for skipped, case in skipped_files:
        logger.info("skipped file %s: %s", skipped.path, skipped.note.message)
    manifest = {
        "schema": SCHEMA,
        "tool": f"insight {__version__}",
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "deidentified": options.deidentify,
        "deidentification": _deid_summary(options) if options.deidentify else None,
        "counts": {"files_seen": found.n_seen, "dicom_files": len(found.headers), "series_found": len(choices),
                   "series_taken": len(taken), "series_skipped": len(entries) - len(taken),
                   "files_skipped": len(skipped_files)},
        "series": entries,
        "skipped_files": [_skipped_file_entry(s, case, src_path, deidentifier) for s, case in skipped_files],
    }
    if not options.deidentify:
        manifest["source"] = str(src_path)
    current = {e[k] for e in taken for k in ("volume", "dicom") if e.get(k)}
    try:
        remove_stale_outputs(dst_path, previous_outputs, current)
        path = write_manifest(dst_path, manifest)
    except OSError as err:
        raise InsightError(f"cannot write to {dst_path}: {err.strerror or err}") from err
    logger.info("ingest: %d series taken, %d skipped, %d files skipped; manifest %s", len(taken),
                len(entries) - len(taken), len(skipped_files), path)
    return manifest


# --- paths ---------------------------------------------------------------------------------------

def _check_paths(src: Path, dst: Path) -> tuple[Path, Path]:
    if not src.exists():
        raise InputError(f"input folder not found: {src}")
    if not src.is_dir():
        raise InputError(f"input must be a folder of DICOM files: {src}")
    src_resolved, dst_resolved = src.resolve(), dst.resolve()
    if dst_resolved == src_resolved or src_resolved in dst_resolved.parents:
        raise InputError(f"--out {dst} is inside the input folder {src}; choose a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a folder")
    ancestor = dst_resolved
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {dst} cannot be created or written ({ancestor} is not a writable folder)")
    return src_resolved, dst_resolved


def _prepare_dst(dst: Path) -> None:
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dst):
            pass
    except OSError as err:
        raise InputError(f"--out {dst} is not writable ({err.strerror or type(err).__name__})") from err
    dicom_root = dst / "dicom"
    if dicom_root.is_dir():  # leftovers of an interrupted run
        for leftover in dicom_root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in dicom_root.glob(".old-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _case_names(choices: list[SeriesChoice]) -> dict[int, str]:
    """``p001-st01-se01`` for every series, numbered in the (stable) order of ``choices``."""
    patients: dict[str, int] = {}
    studies: dict[tuple[str, str], int] = {}
    series_count: Counter = Counter()
    names = {}
    for choice in choices:
        group = choice.group
        p = patients.setdefault(group.patient_id, len(patients) + 1)
        study_key = (group.patient_id, group.study_instance_uid)
        if study_key not in studies:
            studies[study_key] = sum(1 for key in studies if key[0] == group.patient_id) + 1
        series_count[study_key] += 1
        names[id(choice)] = f"p{p:03d}-st{studies[study_key]:02d}-se{series_count[study_key]:02d}"
    return names


# --- conversion of one series ----------------------------------------------------------------------

def _convert_series(choice: SeriesChoice, case: str, dst: Path, options: IngestOptions,
                    deidentifier: Deidentifier | None) -> list[SkippedFile]:
    """Write the volume (and DICOM copies) of a taken series; on failure mark it skipped.

    Returns the files dropped because their pixel data could not be decoded.
    """
    geometry = choice.geometry
    slices, dropped = [], []
    kept_files = []
    for header in geometry.files:
        try:
            slices.append(read_slice_hu(header))
            kept_files.append(header)
        except SliceReadError as err:
            dropped.append(SkippedFile(header.path, err.note))
    if dropped:
        if len(kept_files) < options.min_slices:
            choice.reason = Note("unreadable_pixels", f"{len(dropped)} of {len(geometry.files)} images have "
                                                      f"unreadable pixel data; {len(kept_files)} left, fewer than "
                                                      f"--min-slices {options.min_slices}")
            return dropped
        try:
            geometry = analyze_geometry(kept_files)
        except GeometryError as err:
            choice.reason = err.note
            return dropped
        old_geometry_codes = {w.code for w in choice.geometry.warnings}
        choice.warnings.extend(w for w in geometry.warnings if w.code not in old_geometry_codes)
        choice.warnings.append(Note("dropped_images", f"{len(dropped)} image(s) with unreadable pixel data left out"))
        choice.geometry = geometry
    volume = build_volume(geometry, slices)
    choice.interpolated_slices = volume.interpolated_slices
    if options.write_dicom:
        try:
            _write_dicom_folder(geometry.files, dst / "dicom" / case, deidentifier)
        except OSError:
            raise
        except Exception as err:  # pydicom fails in many ways on malformed elements
            choice.reason = Note("dicom_write_failed", f"the DICOM copy could not be written ({type(err).__name__})")
            return dropped
    write_image(volume.image, dst / "volumes" / f"{case}.nii.gz")
    return dropped


def _write_dicom_folder(files: list[DicomHeader], final: Path, deidentifier: Deidentifier | None) -> None:
    """Write the slices as ``IM0001.dcm``... into a hidden folder beside ``final``, then swap it in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        for index, header in enumerate(files, start=1):
            target = staging / f"IM{index:04d}.dcm"
            if deidentifier is None:
                shutil.copyfile(header.path, target)
                continue
            dataset = pydicom.dcmread(header.path)
            deidentifier.deidentify(dataset)
            dataset.save_as(target, write_like_original=False)
        os.chmod(staging, 0o777 & ~_umask())
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- manifest entries ------------------------------------------------------------------------------

def _series_entry(choice: SeriesChoice, case: str, options: IngestOptions,
                  deidentifier: Deidentifier | None) -> dict:
    group: SeriesGroup = choice.group
    first = group.first
    patient, study, series = case.split("-")
    entry: dict = {"case": case, "status": "taken" if choice.taken else "skipped", "patient": patient,
                   "study": study, "series": series, "modality": first.modality, "sop_class": _sop_name(first),
                   "series_number": first.series_number, "n_files": len(group.files)}
    uid = (lambda u: deidentifier.map_uid(u)) if deidentifier is not None else (lambda u: u)
    if choice.taken:
        entry["study_instance_uid"] = uid(group.study_instance_uid)
        entry["series_instance_uid"] = uid(group.series_instance_uid)
    if not options.deidentify:
        entry["series_description"] = first.series_description
    if not choice.taken:
        entry["reason"] = choice.reason.as_dict()
    else:
        geometry = choice.geometry
        entry.update({
            "volume": f"volumes/{case}.nii.gz",
            "dicom": f"dicom/{case}" if options.write_dicom else None,
            "n_slices_used": len(geometry.files),
            "size_xyz": [geometry.size_xy[0], geometry.size_xy[1], geometry.n_target_slices],
            "spacing_xyz": [round(v, 6) for v in geometry.spacing],
            "origin_lps": [round(float(v), 4) for v in geometry.origin],
            "direction": [round(v, 6) for v in geometry.direction],
            "tilt_deg": round(geometry.tilt_deg, 3),
            "resampled": geometry.needs_resampling,
            "interpolated_slices": list(choice.interpolated_slices),
        })
    entry["warnings"] = [w.as_dict() for w in choice.warnings]
    entry["flags"] = list(choice.flags)
    return entry


def _skipped_file_entry(skipped: SkippedFile, case: str | None, src: Path, deidentifier: Deidentifier | None) -> dict:
    try:
        relative = str(skipped.path.resolve().relative_to(src))
    except ValueError:
        relative = str(skipped.path)
    entry: dict = {"source_id": deidentifier.opaque_id(relative)} if deidentifier else {"source": relative}
    entry["reason"] = skipped.note.as_dict()
    if case is not None:
        entry["case"] = case
    return entry


def _deid_summary(options: IngestOptions) -> dict:
    if options.date_mode == "remove":
        dates = "removed (emptied or deleted as the profile says)"
    elif options.shift_days is not None:
        dates = "shifted by one fixed offset for all patients (offset not recorded); times removed"
    else:
        dates = "shifted by a random offset per patient (offsets not recorded); times removed"
    return {
        "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "table": f"PS3.15 Table E.1-1 via dicom-anonymizer {PROFILE_REVISION}",
        "dates": dates,
        "uids": "remapped (pydicom root, keyed hash), consistent within the run (deterministic for a given secret)",
        "private_tags": "removed",
        "patient": "PatientName and PatientID replaced by a keyed pseudonym",
        "secret": "supplied by the user" if options.secret else "random for this run, not recorded",
        "burned_in_annotation": "series with BurnedInAnnotation YES and secondary captures are skipped",
    }


def _sop_name(header: DicomHeader) -> str:
    name = UID(header.sop_class_uid).name
    return name or header.sop_class_uid


def _summary(n_seen: int, skipped_files: list[SkippedFile], choices: list[SeriesChoice]) -> str:
    parts = [f"{n_seen} file(s)"]
    for code, count in sorted(Counter(s.note.code for s in skipped_files).items()):
        parts.append(f"{count} file(s) {code.replace('_', ' ')}")
    for code, count in sorted(Counter(c.reason.code for c in choices if c.reason).items()):
        parts.append(f"{count} series {code.replace('_', ' ')}")
    return ", ".join(parts)


def _log_choice(choice: SeriesChoice, case: str) -> None:
    if choice.taken:
        logger.info("%s: taken (%d images)%s", case, len(choice.geometry.files),
                    "".join(f"; warning {w.code}: {w.message}" for w in choice.warnings))
    else:
        logger.info("%s: skipped: %s", case, choice.reason.message)
