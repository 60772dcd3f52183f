"""``insight ingest``: a DICOM folder tree in; de-identified volumes, DICOM copies and a manifest out."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)

#: Environment variable holding the de-identification secret when --secret-file is not given.
SECRET_ENV = "INSIGHT_DEID_SECRET"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="convert and de-identify a DICOM folder tree (CT series -> NIfTI)",
        description="Walk SRC, take the CT image series (localizers, dose reports, secondary captures and tiny "
                    "series are skipped with a reason) and write DST/volumes/<case>.nii.gz (int16 HU, exact "
                    "geometry), DST/dicom/<case>/ (de-identified copies) and DST/manifest.json. De-identifies "
                    "by default (DICOM PS3.15 Basic Profile; see the insight.dicom docs). Re-running into the "
                    "same DST replaces that run's outputs atomically.")
    parser.add_argument("src", type=Path, metavar="SRC", help="folder tree holding DICOM files")
    parser.add_argument("--out", required=True, type=Path, metavar="DST", help="output folder")
    parser.add_argument("--keep-identities", action="store_true",
                        help="do NOT de-identify: keep names, IDs, dates and UIDs (explicit opt-out)")
    parser.add_argument("--dicom", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the (de-identified) DICOM slices under DST/dicom (default: yes)")
    dates = parser.add_mutually_exclusive_group()
    dates.add_argument("--date-shift-days", type=int, metavar="N",
                       help="shift every date by N days (all patients); default: a random offset per patient, "
                            "recorded nowhere")
    dates.add_argument("--remove-dates", action="store_true", help="empty or remove dates instead of shifting them")
    parser.add_argument("--secret-file", type=Path, metavar="PATH",
                        help=f"file whose content keys UID remapping, pseudonyms and random date offsets, so "
                             f"re-runs give the same output (default: ${SECRET_ENV}, else random per run)")
    parser.add_argument("--min-slices", type=int, default=5,
                        help="skip series with fewer images (tiny series, scouts); default 5")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.dicom import IngestOptions, ingest  # pydicom/SimpleITK imports

    deidentify = not args.keep_identities
    if not deidentify and (args.date_shift_days is not None or args.remove_dates or args.secret_file):
        raise InputError("--keep-identities cannot be combined with --date-shift-days, --remove-dates or "
                         "--secret-file (those are de-identification options)")
    if args.date_shift_days == 0:
        raise InputError("--date-shift-days 0 would keep the real dates; give a non-zero number of days "
                         "or use --remove-dates")
    options = IngestOptions(
        deidentify=deidentify,
        write_dicom=args.dicom,
        date_mode="remove" if args.remove_dates else "shift",
        shift_days=args.date_shift_days,
        secret=_read_secret(args.secret_file) if deidentify else None,
        min_slices=args.min_slices,
    )
    if not deidentify:
        logger.warning("--keep-identities: outputs keep patient names, IDs, dates and UIDs")
    manifest = ingest(args.src, args.out, options)
    counts = manifest["counts"]
    logger.info("%d series written to %s (%d series and %d files skipped, see manifest.json)",
                counts["series_taken"], args.out, counts["series_skipped"], counts["files_skipped"])
    return 0


def _read_secret(path: Path | None) -> bytes | None:
    if path is None:
        value = os.environ.get(SECRET_ENV, "")
        return value.encode() if value else None
    try:
        secret = path.read_bytes().strip()
    except OSError as err:
        raise InputError(f"--secret-file {path} cannot be read ({err.strerror or type(err).__name__})") from err
    if len(secret) < 16:
        raise InputError(f"--secret-file {path} holds {len(secret)} bytes; use at least 16 (e.g. 32 random bytes)")
    return secret
