"""DICOM ingest: from a PACS export (a folder tree of DICOM files) to de-identified volumes.

``insight ingest SRC --out DST`` (:func:`insight.dicom.ingest.ingest`) walks SRC, groups files
by series, takes CT image series (skipping localizers, dose reports, structured reports,
secondary captures, tiny series and unusable geometry, each with a reason), sorts slices along the
slice normal, detects gantry tilt, missing and irregularly spaced slices, and writes to DST:

- ``volumes/<case>.nii.gz``: int16 HU (rescale slope/intercept applied), exact LPS geometry:
  origin = ImagePositionPatient of the first slice along the normal, direction = (row, column,
  normal) cosines, spacing = (PixelSpacing, slice spacing). Regular stacks are copied voxel for
  voxel; gaps, irregular spacing and tilt are resampled onto a regular orthogonal grid (linear
  along the normal, in-plane shift for tilt) and reported.
- ``dicom/<case>/IM0001.dcm ...``: the source slices, de-identified, in slice order (``--no-dicom``
  to leave them out).
- ``manifest.json``: what was taken and skipped and why, warnings per series (see
  :mod:`insight.dicom.manifest`).

Modules: :mod:`~insight.dicom.discovery` (walk, headers, grouping), :mod:`~insight.dicom.selection`
(which series, why not), :mod:`~insight.dicom.geometry` (sorting, spacing, tilt),
:mod:`~insight.dicom.conversion` (pixels to volume), :mod:`~insight.dicom.deid` (the profile),
:mod:`~insight.dicom.manifest`, :mod:`~insight.dicom.ingest` (the whole run).

De-identification profile
-------------------------
De-identification is on by default; ``--keep-identities`` turns it off explicitly (outputs and
manifest then keep names, UIDs, dates, source paths). With it on:

- The attribute actions of DICOM PS3.15 Annex E Table E.1-1, "Basic Application Level
  Confidentiality Profile" column (table data from the ``dicom-anonymizer`` package, revision
  2026c), applied at every depth of every sequence: X removes, Z empties, D puts a dummy value
  of the VR, U remaps. Compound actions resolve to the safer choice that keeps Type 1/2
  attributes of the CT Image IOD present: X/Z, X/D, X/Z/D remove; Z/D empties; X/Z/U* (Referenced
  and Source Image Sequences) keeps the sequence with its UIDs remapped. A sequence with Z or D is
  emptied.
- Beyond the table (defence in depth): all private attributes removed, group length elements
  dropped, every PN not in the table emptied, every TM emptied or removed, every UI value that is
  not a standard (1.2.840.10008.*) UID or a class/syntax UID remapped, the 128-byte preamble
  zeroed, the file meta group rebuilt (no source AE title, pydicom's implementation UID).
- UIDs: ``pydicom.uid.generate_uid(entropy_srcs=[secret, uid])`` (a SHA-512 of both under
  pydicom's root ``1.2.826.0.1.3680043.8.498.``; note that ``prefix=None`` would ignore the
  entropy and draw a random ``2.25`` UUID, so it is not used): the same
  input UID always gives the same output UID within a run, across files and sequences, and across
  runs given the same ``--secret-file``. Without one, the secret is random per run and recorded
  nowhere.
- Patient: PatientName and PatientID become one keyed pseudonym ``ANON-<12 hex>``;
  PatientBirthDate is always emptied; age, sex, address, comments etc. follow the table.
- Dates (Retain Longitudinal Temporal Information with Modified Dates Option, code 113107): every
  DA is shifted by the patient's offset, DT values keep only their shifted date (the time of day
  goes, as all TM values do). The offset is ``--date-shift-days N`` for every patient, or drawn per
  patient from the secret in [-3650, -365] days; it is written nowhere. ``--remove-dates`` instead
  applies the table's actions to dates (emptied or removed) and empties dates it does not list.
- PatientIdentityRemoved = YES, DeidentificationMethod and DeidentificationMethodCodeSequence
  (113100, plus 113107 when shifting), LongitudinalTemporalInformationModified = MODIFIED or REMOVED.
- Burned-in text: the Clean Pixel Data Option is not implemented, so series with
  BurnedInAnnotation = YES and secondary captures are skipped and flagged
  ``burned_in_annotation`` in the manifest (with ``--keep-identities`` such CT series are taken,
  still flagged).
- Kept unchanged: everything the volume needs (ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, SliceThickness, Rows/Columns, Rescale Slope/Intercept, pixel data), and
  non-identifying acquisition attributes the table keeps (kVp, kernel, manufacturer, model).
- The manifest of a de-identified run holds no names, IDs, dates, descriptions, original UIDs or
  source paths (skipped files appear as a keyed ``source_id``; their paths go to the log only).
"""

from insight.dicom.ingest import IngestOptions, ingest

__all__ = ["IngestOptions", "ingest"]
