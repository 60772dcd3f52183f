"""``insight ingest`` on real DICOM and on variants built from it: geometry, HU, skips, warnings, re-runs, errors.

Inputs are copies of the real series in tests/data/real-ct (Siemens A0002 8 slices, Philips A0001
5 slices). Variants are made with pydicom on those copies: shuffled names and instance numbers,
a missing slice, a sheared (gantry tilt) stack, other rescale values, a localizer, a dose report,
a secondary capture, a tiny series, non-DICOM and corrupt files. Expected values are computed
from the DICOM headers and ``pixel_array`` (pydicom), independently of the code under test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from insight.cli import main
from insight.io import read_image

REPO = Path(__file__).resolve().parents[1]
SIEMENS_SERIES = REPO / "tests" / "data" / "real-ct" / "A0002_B40f_8slices"
PHILIPS_SERIES = REPO / "tests" / "data" / "real-ct" / "A0001_5mm_5slices"


# --- builders ----------------------------------------------------------------------------------

def sorted_datasets(series: Path) -> list[tuple[Path, Dataset]]:
    """(path, full dataset) of a real series, sorted by position along the slice normal."""
    items = [(p, pydicom.dcmread(p)) for p in sorted(series.glob("*.dcm"))]

    def along(ds: Dataset) -> float:
        iop = np.array(ds.ImageOrientationPatient, float)
        return float(np.cross(iop[:3], iop[3:]) @ np.array(ds.ImagePositionPatient, float))

    return sorted(items, key=lambda item: along(item[1]))


def write_variant(series: Path, out: Path, change=None, names=None, skip: tuple[int, ...] = ()) -> Path:
    """Copy ``series`` to ``out`` slice by slice (sorted order k), applying ``change(ds, k)``."""
    out.mkdir(parents=True, exist_ok=True)
    for k, (path, ds) in enumerate(sorted_datasets(series)):
        if k in skip:
            continue
        if change is not None:
            change(ds, k)
        target = out / (names[k] if names else path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    return out


def minimal_instance(sop_class: str, modality: str, study_uid: str, patient_id: str) -> Dataset:
    """A small valid instance of ``sop_class`` with file meta, ready for ``save_as``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    return ds


def run_ingest(src: Path, dst: Path, *extra: str) -> dict:
    assert main(["ingest", str(src), "--out", str(dst), *extra]) == 0
    return json.loads((dst / "manifest.json").read_text())


def taken(manifest: dict) -> list[dict]:
    return [s for s in manifest["series"] if s["status"] == "taken"]


def volume_of(dst: Path, entry: dict) -> sitk.Image:
    return sitk.ReadImage(str(dst / entry["volume"]))


def expected_hu(ds: Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# --- the real series ---------------------------------------------------------------------------

@pytest.mark.parametrize("series", [SIEMENS_SERIES, PHILIPS_SERIES], ids=["siemens", "philips"])
def test_real_series_volume_has_dicom_geometry_and_hu(tmp_path, series):
    manifest = run_ingest(series, tmp_path / "out")
    [entry] = taken(manifest)
    image = volume_of(tmp_path / "out", entry)
    datasets = [ds for _, ds in sorted_datasets(series)]
    first = datasets[0]
    iop = np.array(first.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    along = [float(normal @ np.array(ds.ImagePositionPatient, float)) for ds in datasets]

    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSize() == (int(first.Columns), int(first.Rows), len(datasets))
    np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in first.ImagePositionPatient], atol=1e-4)
    dz = (along[-1] - along[0]) / (len(along) - 1)
    np.testing.assert_allclose(image.GetSpacing(), (float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), dz),
                               atol=1e-6)
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3),
                               np.column_stack([iop[:3], iop[3:], normal]), atol=1e-6)
    voxels = sitk.GetArrayFromImage(image)
    for k, ds in enumerate(datasets):
        np.testing.assert_array_equal(voxels[k], expected_hu(ds))
    assert entry["warnings"] == [] and entry["resampled"] is False and entry["interpolated_slices"] == []
    # every slice's physical position: voxel (0, 0, k) sits at slice k's ImagePositionPatient
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((0, 0, k)),
                                   [float(v) for v in ds.ImagePositionPatient], atol=1e-3)
    # the de-identified DICOM copies read back (GDCM) to the same volume, slice files in order
    copies = sorted((tmp_path / "out" / entry["dicom"]).iterdir())
    assert [p.name for p in copies] == [f"IM{k:04d}.dcm" for k in range(1, len(datasets) + 1)]
    again = read_image(tmp_path / "out" / entry["dicom"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), voxels)
    np.testing.assert_allclose(again.GetOrigin(), image.GetOrigin(), atol=1e-4)


def test_shuffled_file_order_and_instance_numbers_give_the_same_volume(tmp_path):
    reference = run_ingest(SIEMENS_SERIES, tmp_path / "ref")
    rng = np.random.default_rng(3)
    order = rng.permutation(8)
    names = [f"sub{order[k] % 3}/x{order[k]:02d}.dcm" for k in range(8)]

    def scramble(ds, k):
        ds.InstanceNumber = int(order[k]) + 100

    src = write_variant(SIEMENS_SERIES, tmp_path / "shuffled", scramble, names=names)
    shuffled = run_ingest(src, tmp_path / "out")
    a, b = volume_of(tmp_path / "ref", taken(reference)[0]), volume_of(tmp_path / "out", taken(shuffled)[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing() and a.GetDirection() == b.GetDirection()


# --- geometry problems -------------------------------------------------------------------------

def test_missing_middle_slice_is_reported_and_filled_by_interpolation(tmp_path):
    src = write_variant(SIEMENS_SERIES, tmp_path / "gap", skip=(4,))
    [entry] = taken(run_ingest(src, tmp_path / "out"))
    assert [w["code"] for w in entry["warnings"]] == ["missing_slices"]
    assert "1 slice(s) missing" in entry["warnings"][0]["message"]
    assert entry["interpolated_slices"] == [4] and entry["n_slices_used"] == 7
    image = volume_of(tmp_path / "out", entry)
    assert image.GetSize()[2] == 8
    np.testing.assert_allclose(image.GetSpacing()[2], 8.0, atol=1e-6)
    voxels = sitk.GetArrayFromImage(image).astype(float)
    datasets = [ds for _, ds in sorted_datasets(SIEMENS_SERIES)]
    for k in (0, 3, 5, 7):  # acquired slices stay exact and in place
        np.testing.assert_array_equal(voxels[k], expected_hu(datasets[k]))
    midpoint = (expected_hu(datasets[3]) + expected_hu(datasets[5])) / 2
    assert np.abs(voxels[4] - midpoint).max() <= 0.5


def test_irregular_spacing_is_reported_and_resampled(tmp_path):
    def nudge(ds, k):
        if k == 5:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                       float(ds.ImagePositionPatient[2]) + 3.0]

    src = write_variant(SIEMENS_SERIES, tmp_path / "irregular", nudge)
    [entry] = taken(run_ingest(src, tmp_path / "out"))
    assert [w["code"] for w in entry["warnings"]] == ["irregular_spacing"]
    assert entry["resampled"] is True and entry["spacing_xyz"][2] == pytest.approx(8.0)
    assert 5 in entry["interpolated_slices"]


def test_gantry_tilt_is_detected_and_the_stack_is_unsheared(tmp_path):
    tilt = 15.0
    datasets = [ds for _, ds in sorted_datasets(SIEMENS_SERIES)]
    z0 = float(datasets[0].ImagePositionPatient[2])

    def shear(ds, k):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (z - z0) * math.tan(math.radians(tilt)), z]
        ds.GantryDetectorTilt = tilt

    src = write_variant(SIEMENS_SERIES, tmp_path / "tilted", shear)
    [entry] = taken(run_ingest(src, tmp_path / "out"))
    assert [w["code"] for w in entry["warnings"]] == ["gantry_tilt"]
    assert entry["tilt_deg"] == pytest.approx(tilt, abs=0.05)
    image = volume_of(tmp_path / "out", entry)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in datasets[0].ImagePositionPatient], atol=1e-4)
    voxels = sitk.GetArrayFromImage(image).astype(float)
    np.testing.assert_array_equal(voxels[0], expected_hu(datasets[0]))
    # independent oracle: the acquired stack as a sheared SimpleITK image (non-orthogonal direction),
    # resampled by SimpleITK onto the output grid
    positions = [np.array(ds.ImagePositionPatient, float) for ds in datasets]
    positions = [np.array([p[0], p[1] + (p[2] - z0) * math.tan(math.radians(tilt)), p[2]]) for p in positions]
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    sheared = sitk.GetImageFromArray(np.stack([expected_hu(ds) for ds in datasets]).astype(np.float32))
    sheared.SetOrigin(tuple(positions[0]))
    sheared.SetSpacing((float(datasets[0].PixelSpacing[1]), float(datasets[0].PixelSpacing[0]),
                        float(np.linalg.norm(step))))
    sheared.SetDirection(tuple(np.column_stack([[1, 0, 0], [0, 1, 0], step / np.linalg.norm(step)]).ravel()))
    oracle = sitk.GetArrayFromImage(sitk.Resample(sheared, image, sitk.Transform(), sitk.sitkLinear, -1024.0))
    ones = sitk.Image(sheared.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(sheared)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    difference = np.abs(voxels - oracle)[inside]
    assert inside[-1].mean() > 0.9  # most of the last slice is still inside the acquired field of view
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 1.0  # rounding to int16, edges apart


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    def rescale(ds, k):
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -1000 + k

    src = write_variant(SIEMENS_SERIES, tmp_path / "rescaled", rescale)
    [entry] = taken(run_ingest(src, tmp_path / "out"))
    voxels = sitk.GetArrayFromImage(volume_of(tmp_path / "out", entry)).astype(float)
    for k, (_, ds) in enumerate(sorted_datasets(SIEMENS_SERIES)):
        expected = ds.pixel_array * 0.5 - 1000 + k
        assert np.abs(voxels[k] - expected).max() <= 0.5


# --- selection and bad files ---------------------------------------------------------------------

def build_mixed_tree(root: Path) -> Path:
    """The real series plus a localizer, an RDSR, a secondary capture, a tiny series and junk files."""
    write_variant(SIEMENS_SERIES, root / "ct")
    datasets = [ds for _, ds in sorted_datasets(SIEMENS_SERIES)]
    first = datasets[0]
    study, patient = str(first.StudyInstanceUID), str(first.PatientID)

    localizer = pydicom.dcmread(sorted(SIEMENS_SERIES.glob("*.dcm"))[0])
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    localizer.SeriesInstanceUID, localizer.SOPInstanceUID = generate_uid(), generate_uid()
    localizer.file_meta.MediaStorageSOPInstanceUID = localizer.SOPInstanceUID
    localizer.SeriesNumber = 1
    (root / "scout").mkdir()
    localizer.save_as(root / "scout" / "topogram.dcm")

    rdsr = minimal_instance("1.2.840.10008.5.1.4.1.1.88.67", "SR", study, patient)
    rdsr.save_as(root / "dose_report.dcm", write_like_original=False)

    capture = minimal_instance("1.2.840.10008.5.1.4.1.1.7", "OT", study, patient)
    capture.BurnedInAnnotation = "YES"
    capture.Rows, capture.Columns, capture.SamplesPerPixel, capture.BitsAllocated = 16, 16, 1, 8
    capture.BitsStored, capture.HighBit, capture.PixelRepresentation = 8, 7, 0
    capture.PhotometricInterpretation = "MONOCHROME2"
    capture.PixelData = bytes(256)
    capture.save_as(root / "screenshot.dcm", write_like_original=False)

    tiny_series = generate_uid()

    def retag(ds, k):
        ds.SeriesInstanceUID, ds.SOPInstanceUID = tiny_series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    write_variant(SIEMENS_SERIES, root / "tiny", retag, skip=(2, 3, 4, 5, 6, 7))

    (root / "notes.txt").write_text("not a DICOM file\n")
    (root / "empty.dcm").write_bytes(b"")
    raw = sorted(SIEMENS_SERIES.glob("*.dcm"))[0].read_bytes()
    (root / "truncated_header.dcm").write_bytes(raw[:300])
    (root / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 8)
    return root


def test_localizer_dose_report_capture_tiny_series_and_junk_are_skipped_with_reasons(tmp_path):
    src = build_mixed_tree(tmp_path / "tree")
    manifest = run_ingest(src, tmp_path / "out")
    [ct] = taken(manifest)
    assert ct["n_files"] == 8 and ct["warnings"] == []
    reasons = sorted(s["reason"]["code"] for s in manifest["series"] if s["status"] == "skipped")
    assert reasons == ["dose_report", "localizer", "secondary_capture", "too_few_slices"]
    capture = next(s for s in manifest["series"] if s.get("reason", {}).get("code") == "secondary_capture")
    assert capture["flags"] == ["burned_in_annotation"]
    file_codes = sorted(f["reason"]["code"] for f in manifest["skipped_files"])
    assert file_codes.count("not_dicom") == 2  # notes.txt, empty.dcm
    assert len(file_codes) == 4 and set(file_codes) <= {"not_dicom", "unreadable_dicom", "incomplete_header"}
    assert all("source_id" in f and "source" not in f for f in manifest["skipped_files"])  # no paths when de-identified
    assert manifest["counts"] == {"files_seen": 17, "dicom_files": 13, "series_found": 5, "series_taken": 1,
                                  "series_skipped": 4, "files_skipped": 4}
    assert sorted(p.name for p in (tmp_path / "out" / "volumes").iterdir()) == [f"{ct['case']}.nii.gz"]


def test_corrupt_slice_inside_a_series_is_dropped_and_leaves_a_gap(tmp_path):
    src = write_variant(SIEMENS_SERIES, tmp_path / "series")
    victim = sorted_datasets(src)[3][0]
    victim.write_bytes(victim.read_bytes()[:-200_000])  # pixel data cut short, header intact
    manifest = run_ingest(src, tmp_path / "out", "--keep-identities")
    [entry] = taken(manifest)
    assert {w["code"] for w in entry["warnings"]} == {"missing_slices", "dropped_images"}
    assert entry["interpolated_slices"] == [3]
    [dropped] = manifest["skipped_files"]
    assert dropped == {"source": victim.name, "reason": dropped["reason"], "case": entry["case"]}
    assert dropped["reason"]["code"] == "unreadable_pixels"
    assert len(list((tmp_path / "out" / entry["dicom"]).iterdir())) == 7


def test_burned_in_ct_series_is_skipped_when_deidentifying_and_flagged_when_kept(tmp_path):
    def burn(ds, k):
        ds.BurnedInAnnotation = "YES"

    src = write_variant(SIEMENS_SERIES, tmp_path / "burned", burn)
    assert main(["ingest", str(src), "--out", str(tmp_path / "deid")]) == 2  # nothing left to take
    manifest = run_ingest(src, tmp_path / "kept", "--keep-identities")
    [entry] = taken(manifest)
    assert entry["flags"] == ["burned_in_annotation"]
    assert [w["code"] for w in entry["warnings"]] == ["burned_in_annotation"]


# --- re-runs -------------------------------------------------------------------------------------

def test_rerun_into_the_same_folder_replaces_outputs_and_touches_nothing_else(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a site secret of at least sixteen bytes")
    options = ("--secret-file", str(secret), "--date-shift-days", "-400")
    dst = tmp_path / "out"
    first = run_ingest(SIEMENS_SERIES, dst, *options)
    (dst / "my_notes.txt").write_text("user file")

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(dst)): p.read_bytes() for p in sorted(dst.rglob("*")) if p.is_file()
                and p.name != "manifest.json"}

    before = snapshot()
    (dst / "dicom" / ".tmp-p001-st01-se01-leftover").mkdir()  # as an interrupted run would leave
    second = run_ingest(SIEMENS_SERIES, dst, *options)
    assert snapshot() == before  # same names, same bytes, leftover cleaned, user file kept
    first.pop("created"), second.pop("created")
    assert first == second

    third = run_ingest(SIEMENS_SERIES, dst, "--no-dicom", *options)
    assert not (dst / "dicom" / "p001-st01-se01").exists()  # listed by the previous manifest, not produced now
    assert taken(third)[0]["dicom"] is None
    assert (dst / "my_notes.txt").read_text() == "user file"
    assert (dst / "volumes" / "p001-st01-se01.nii.gz").read_bytes() == before["volumes/p001-st01-se01.nii.gz"]
    assert not [p for p in dst.rglob("*") if ".tmp" in p.name]


# --- errors --------------------------------------------------------------------------------------

def assert_one_line_error(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("insight ingest: error: ") and expected in err[0], err


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert_one_line_error(capsys, ["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "not found")

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("hello")
    minimal_instance("1.2.840.10008.5.1.4.1.1.88.67", "SR", generate_uid(), "X").save_as(
        junk / "sr.dcm", write_like_original=False)
    assert_one_line_error(capsys, ["ingest", str(junk), "--out", str(tmp_path / "o")], "no CT image series found")
    assert not (tmp_path / "o").exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_one_line_error(capsys, ["ingest", str(SIEMENS_SERIES), "--out", str(blocker / "sub")], "not a writable folder")
    assert_one_line_error(capsys, ["ingest", str(SIEMENS_SERIES), "--out", str(blocker)], "not a folder")

    src = write_variant(SIEMENS_SERIES, tmp_path / "src")
    assert_one_line_error(capsys, ["ingest", str(src), "--out", str(src / "out")], "inside the input folder")

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"something": "else"}')
    assert_one_line_error(capsys, ["ingest", str(src), "--out", str(foreign)], "not written by insight ingest")
    assert (foreign / "manifest.json").read_text() == '{"something": "else"}'

    assert_one_line_error(capsys, ["ingest", str(src), "--out", str(tmp_path / "o"), "--keep-identities",
                                   "--remove-dates"], "cannot be combined")
    assert_one_line_error(capsys, ["ingest", str(src), "--out", str(tmp_path / "o"), "--date-shift-days", "0"],
                          "would keep the real dates")


def test_installed_command_reports_errors_without_traceback(tmp_path):
    command = [str(Path(sys.executable).parent / "insight"), "ingest", str(tmp_path / "nope"), "--out",
               str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"insight ingest: error: input folder not found: {tmp_path / 'nope'}"
