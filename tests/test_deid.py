"""De-identification, tested the hard way on copies of real series with planted PHI.

Every slice of a copy of a real series (Siemens explicit VR, Philips implicit VR) gets distinct
synthetic PHI in every kind of attribute: PN, LO, SH, LT, ST, DA, DT, TM, AS, UI, addresses,
comments, private tags (top level and nested), items of nested sequences (Request Attributes,
Referenced Performed Procedure Step, a kept sequence holding table attributes two levels down),
the file meta group and the 128-byte preamble. After ``insight ingest``, every element of every
output file (sequences at any depth and file meta included), the raw bytes of every output file,
the decompressed volumes and the manifest are searched for each planted string and each original
instance UID. UIDs must be remapped consistently, geometry and pixels must be untouched.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from insight.cli import main
from insight.dicom.deid import DATE_SHIFT_RANGE_DAYS, profile_action

REPO = Path(__file__).resolve().parents[1]
SERIES = {"siemens": REPO / "tests" / "data" / "real-ct" / "A0002_B40f_8slices",
          "philips": REPO / "tests" / "data" / "real-ct" / "A0001_5mm_5slices"}
MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step SOP Class
#: Attributes kept byte for byte: what the volume's geometry and HU depend on.
GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                     "Rows", "Columns", "RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored",
                     "PixelRepresentation", "PhotometricInterpretation", "PixelData")


def phi_for(k: int) -> dict[str, str]:
    """Distinct synthetic PHI for slice k: keyword -> value (dates/times valid for their VR)."""
    return {
        "PatientName": f"PHIDOE{k}^PHIJOHN{k}",                      # PN
        "PatientID": f"PHIMRN00{k}42",                               # LO
        "OtherPatientIDs": f"PHIOTHERID{k}77",                       # LO
        "PatientBirthDate": f"1951030{k}",                           # DA
        "PatientAge": f"07{k}Y",                                     # AS
        "PatientAddress": f"{k}2 PHISTREET SPRINGFIELD",             # LO, an address
        "PatientTelephoneNumbers": f"555PHI01{k}9",                  # SH
        "PatientComments": f"PHICOMMENT{k} lives next to the clinic",  # LT, a comment
        "ReferringPhysicianName": f"PHIREFERRER{k}^ANN",            # PN
        "PerformingPhysicianName": f"PHIPERFORMER{k}^BOB",          # PN
        "OperatorsName": f"PHIOPERATOR{k}^CAT",                     # PN
        "InstitutionName": f"PHI GENERAL HOSPITAL {k}",              # LO
        "InstitutionAddress": f"{k}9 PHIROAD METROPOLIS",            # ST, an address
        "StationName": f"PHISTATION{k}",                             # SH
        "AccessionNumber": f"PHIACC99887{k}",                        # SH
        "StudyID": f"PHISTUDY{k}5",                                  # SH
        "StudyDescription": f"PHI STUDY DESCRIPTION {k}",            # LO
        "SeriesDescription": f"PHI SERIES DESCRIPTION {k}",          # LO
        "ProtocolName": f"PHIPROTOCOL{k}",                           # LO
        "ImageComments": f"PHI IMAGE COMMENT {k}",                   # LT
        "DeviceSerialNumber": f"PHISERIAL3133{k}",                   # LO
        "StudyDate": "19870623",                                     # DA (one study: same in every slice)
        "SeriesDate": "19870624",
        "AcquisitionDate": "19870625",
        "ContentDate": f"1987071{k}",
        "StudyTime": "071733.246810",                                # TM
        "SeriesTime": "071734.135790",
        "AcquisitionTime": f"07173{k}.975310",
        "ContentTime": f"08173{k}.123456",
        "AcquisitionDateTime": f"1987062{k}093015.424242",           # DT
    }


def plant(ds: Dataset, k: int, previous_sop_uid: str | None) -> list[str]:
    """Put slice k's PHI into ``ds`` (every kind of place); return the planted strings to search for."""
    values = phi_for(k)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    planted = list(values.values())

    creator = f"PHI PRIVATE CREATOR {k}"
    block = ds.private_block(0x0011, creator, create=True)
    block.add_new(0x01, "LO", f"PHIPRIVATEVALUE{k}")
    planted += [creator, f"PHIPRIVATEVALUE{k}"]

    request = Dataset()  # Request Attributes Sequence: the profile removes it whole
    request.RequestedProcedureID = f"PHIREQPROC{k}"
    request.ScheduledProcedureStepID = f"PHISPS{k}"
    request.AccessionNumber = f"PHIACCNESTED{k}"
    request.RequestedProcedureDescription = f"PHI REQUESTED PROCEDURE {k}"
    request.ScheduledProcedureStepStartDate = f"1987061{k}"
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    inner.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.2.1143.77.{k}.1"
    request.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([request])
    planted += [f"PHIREQPROC{k}", f"PHISPS{k}", f"PHIACCNESTED{k}", f"PHI REQUESTED PROCEDURE {k}", f"1987061{k}"]

    step = Dataset()  # Referenced Performed Procedure Step Sequence
    step.ReferencedSOPClassUID = MPPS_CLASS
    step.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.2.1143.78.{k}.2"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([step])

    # a sequence the profile keeps (Source Image Sequence, X/Z/U*), carrying table attributes, a
    # private tag and a deeper sequence; its reference points at the previous slice
    source = Dataset()
    source.ReferencedSOPClassUID = str(ds.SOPClassUID)
    source.ReferencedSOPInstanceUID = previous_sop_uid or f"1.2.826.0.1.3680043.2.1143.79.{k}.3"
    source.InstitutionName = f"PHI NESTED INSTITUTION {k}"
    source.PerformingPhysicianName = f"PHINESTED{k}^DAN"
    source.private_block(0x0013, f"PHI NESTED CREATOR {k}", create=True).add_new(0x10, "LO", f"PHINESTEDPRIVATE{k}")
    deeper = Dataset()
    deeper.OperatorsName = f"PHIDEEP{k}^EVE"
    deeper.ContentDate = f"1987081{k}"
    deeper.ContentTime = f"09173{k}.654321"
    source.ReferencedImageSequence = Sequence([deeper])
    ds.SourceImageSequence = Sequence([source])
    planted += [f"PHI NESTED INSTITUTION {k}", f"PHINESTED{k}^DAN", f"PHI NESTED CREATOR {k}",
                f"PHINESTEDPRIVATE{k}", f"PHIDEEP{k}^EVE", f"1987081{k}", f"09173{k}.654321"]

    ds.InstanceCreatorUID = f"1.2.826.0.1.3680043.2.1143.80.{k}.4"
    ds.file_meta.SourceApplicationEntityTitle = f"PHIAE{k}"
    ds.preamble = f"PHIPREAMBLE{k}".encode().ljust(128, b"\0")
    planted += [f"PHIAE{k}", f"PHIPREAMBLE{k}"]
    return planted


def instance_uids(ds: Dataset) -> set[str]:
    """Every UID value in ``ds`` (any depth, file meta too) that is not a standard class/syntax UID."""
    found = set()
    elements = list(ds.file_meta) + list(ds.iterall())
    for elem in elements:
        if elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            found.update(str(v) for v in values if not str(v).startswith("1.2.840.10008."))
    found.discard("1.3.12.2.1107.5.9.1")  # a Siemens private SOP *class* UID, not an instance
    return found


@pytest.fixture
def planted_series(tmp_path_factory, request):
    """A copy of a real series with PHI planted in every slice: (folder, planted strings, original UIDs, datasets)."""
    name = request.param
    folder = tmp_path_factory.mktemp(f"phi_{name}") / "Patient PHIDOE^JOHN"  # PHI in the path too
    folder.mkdir()
    planted, originals, datasets = [], set(), []
    previous = None
    for k, path in enumerate(sorted(SERIES[name].glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        planted += plant(ds, k, previous)
        previous = str(ds.SOPInstanceUID)
        ds.save_as(folder / f"slice_PHIDOE_{k}.dcm")
        again = pydicom.dcmread(folder / f"slice_PHIDOE_{k}.dcm")
        originals |= instance_uids(again)
        datasets.append(again)
    assert any(elem.tag.is_private for ds in datasets for elem in ds.iterall())
    return folder, sorted(set(planted)), originals, datasets


def element_texts(ds: Dataset) -> list[str]:
    """The value of every element of ``ds`` (file meta, every sequence at any depth) as text."""
    texts = [ds.preamble.decode("latin-1") if ds.preamble else ""]
    for elem in list(ds.file_meta) + list(ds.iterall()):
        value = elem.value
        if isinstance(value, bytes):
            texts.append(value.decode("latin-1"))
        elif elem.VR != "SQ":
            texts.append(str(value))
    return texts


def run_ingest(src: Path, dst: Path, *extra: str) -> dict:
    assert main(["ingest", str(src), "--out", str(dst), *extra]) == 0
    return json.loads((dst / "manifest.json").read_text())


def output_datasets(dst: Path) -> list[tuple[Path, Dataset]]:
    return [(p, pydicom.dcmread(p)) for p in sorted((dst / "dicom").rglob("*.dcm"))]


def by_position(datasets) -> dict[tuple[float, ...], Dataset]:
    return {tuple(round(float(v), 4) for v in ds.ImagePositionPatient): ds for ds in datasets}


@pytest.mark.parametrize("planted_series", ["siemens", "philips"], indirect=True)
def test_no_planted_phi_or_original_uid_survives_anywhere(tmp_path, planted_series):
    src, planted, originals, inputs = planted_series
    dst = tmp_path / "out"
    manifest = run_ingest(src, dst)
    outputs = output_datasets(dst)
    assert len(outputs) == len(inputs) and originals

    raw_blobs = {p: p.read_bytes() for p, _ in outputs}
    raw_blobs[dst / "manifest.json"] = (dst / "manifest.json").read_bytes()
    for volume in (dst / "volumes").iterdir():
        raw_blobs[volume] = gzip.decompress(volume.read_bytes())
    for path, ds in outputs:
        texts = element_texts(ds)
        for needle in planted + sorted(originals):
            assert not any(needle in text for text in texts), f"{needle!r} survives in an element of {path.name}"
        assert not any(elem.tag.is_private for elem in ds.iterall()), f"private tag left in {path.name}"
        for keyword in ("RequestAttributesSequence", "ReferencedPerformedProcedureStepSequence", "PatientAge",
                        "OtherPatientIDs", "PatientAddress", "PatientComments", "InstitutionName",
                        "InstitutionAddress", "StudyDescription", "SeriesDescription", "ProtocolName",
                        "DeviceSerialNumber"):
            assert keyword not in ds, f"{keyword} should be removed"
        assert "SourceApplicationEntityTitle" not in ds.file_meta
    for path, blob in raw_blobs.items():
        for needle in planted + sorted(originals):
            assert needle.encode() not in blob, f"{needle!r} survives in the bytes of {path.name}"
    text = json.dumps(manifest)
    assert str(src) not in text and "PHIDOE" not in text and manifest["deidentified"] is True


@pytest.mark.parametrize("planted_series", ["siemens"], indirect=True)
def test_uids_are_remapped_consistently_and_geometry_and_pixels_are_intact(tmp_path, planted_series):
    src, _, originals, inputs = planted_series
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef-site-secret")
    manifest = run_ingest(src, tmp_path / "a", "--secret-file", str(secret))
    outputs = [ds for _, ds in output_datasets(tmp_path / "a")]
    inputs_at, outputs_at = by_position(inputs), by_position(outputs)
    assert inputs_at.keys() == outputs_at.keys()

    # one study, one series, one frame of reference, each remapped, the same in every file and the manifest
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(getattr(ds, keyword)) for ds in outputs}) == 1
        assert str(getattr(outputs[0], keyword)) not in originals
    [entry] = manifest["series"]
    assert entry["series_instance_uid"] == str(outputs[0].SeriesInstanceUID)
    assert entry["study_instance_uid"] == str(outputs[0].StudyInstanceUID)

    new_sop = {str(inputs_at[pos].SOPInstanceUID): str(out.SOPInstanceUID) for pos, out in outputs_at.items()}
    assert len(set(new_sop.values())) == len(new_sop)
    for pos, out in outputs_at.items():
        original = inputs_at[pos]
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        reference = str(original.SourceImageSequence[0].ReferencedSOPInstanceUID)
        remapped = str(out.SourceImageSequence[0].ReferencedSOPInstanceUID)
        if reference in new_sop:  # points at another slice: must point at that slice's new UID
            assert remapped == new_sop[reference]
        else:
            assert remapped not in originals and remapped.startswith("1.2.826.0.1.3680043.8.498.")
        for keyword in GEOMETRY_KEYWORDS:
            assert out[keyword].value == original[keyword].value, keyword
        np.testing.assert_array_equal(out.pixel_array, original.pixel_array)
        assert out.PatientIdentityRemoved == "YES" and out.DeidentificationMethod
        codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107"] and out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert out.PatientName == out.PatientID and str(out.PatientID).startswith("ANON-")
    assert sum(1 for ds in inputs if str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) in new_sop) == 7

    # the same secret maps the same input UIDs to the same output UIDs in another run; another secret does not
    run_ingest(src, tmp_path / "b", "--secret-file", str(secret))
    again = {str(ds.SOPInstanceUID) for _, ds in output_datasets(tmp_path / "b")}
    assert again == set(new_sop.values())
    other = tmp_path / "other"
    other.write_text("another secret, also long enough")
    run_ingest(src, tmp_path / "c", "--secret-file", str(other))
    assert not again & {str(ds.SOPInstanceUID) for _, ds in output_datasets(tmp_path / "c")}


@pytest.mark.parametrize("planted_series", ["siemens"], indirect=True)
def test_fixed_date_shift_moves_every_date_and_drops_times(tmp_path, planted_series):
    src, _, _, inputs = planted_series
    run_ingest(src, tmp_path / "out", "--date-shift-days", "-1000")
    outputs_at = by_position(ds for _, ds in output_datasets(tmp_path / "out"))
    inputs_at = by_position(inputs)

    def shifted(text: str) -> str:
        return (dt.datetime.strptime(text[:8], "%Y%m%d") - dt.timedelta(days=1000)).strftime("%Y%m%d")

    for pos, out in outputs_at.items():
        original = inputs_at[pos]
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            assert getattr(out, keyword) == shifted(getattr(original, keyword)), keyword
        assert out.AcquisitionDateTime == shifted(original.AcquisitionDateTime)  # date kept, time of day gone
        deep = out.SourceImageSequence[0].ReferencedImageSequence[0]
        assert deep.ContentDate == shifted(original.SourceImageSequence[0].ReferencedImageSequence[0].ContentDate)
        assert out.get("PatientBirthDate", "") == ""
        for elem in out.iterall():
            if elem.VR == "TM":
                assert not elem.value, f"{elem.keyword} keeps a time"


@pytest.mark.parametrize("planted_series", ["siemens"], indirect=True)
def test_remove_dates_leaves_no_date_or_time(tmp_path, planted_series):
    src, _, _, _ = planted_series
    run_ingest(src, tmp_path / "out", "--remove-dates")
    for _, ds in output_datasets(tmp_path / "out"):
        for elem in ds.iterall():
            if elem.VR in ("DA", "DT", "TM"):
                assert not elem.value, f"{elem.keyword} = {elem.value!r}"
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100"]


def test_random_date_offsets_are_per_patient_and_recorded_nowhere(tmp_path):
    """Two patients, two studies of the first: offsets agree within a patient, lie in range, appear nowhere."""
    src = tmp_path / "src"
    # cases are numbered by (original patient, study date): p001-st01, p001-st02, p002-st01
    studies = {"p001-st01-se01": ("PATIENT-ONE", "20100105", SERIES["siemens"]),
               "p001-st02-se01": ("PATIENT-ONE", "20110615", SERIES["philips"]),
               "p002-st01-se01": ("PATIENT-TWO", "20100105", SERIES["philips"])}
    for case, (patient, study_date, series_dir) in studies.items():
        study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        for k, path in enumerate(sorted(series_dir.glob("*.dcm"))):
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.StudyDate = patient, study_date
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            (src / case).mkdir(parents=True, exist_ok=True)
            ds.save_as(src / case / f"{k}.dcm")
    secret = tmp_path / "secret"
    secret.write_text("fixed secret so the test is deterministic")
    manifest = run_ingest(src, tmp_path / "out", "--secret-file", str(secret))
    assert sorted(s["case"] for s in manifest["series"] if s["status"] == "taken") == sorted(studies)

    offsets: dict[str, set[int]] = {}
    pseudonyms: dict[str, set[str]] = {}
    for case, (patient, study_date, _) in studies.items():
        for path in sorted((tmp_path / "out" / "dicom" / case).iterdir()):
            ds = pydicom.dcmread(path)
            shifted = dt.datetime.strptime(ds.StudyDate, "%Y%m%d")
            offsets.setdefault(patient, set()).add((shifted - dt.datetime.strptime(study_date, "%Y%m%d")).days)
            pseudonyms.setdefault(patient, set()).add(str(ds.PatientID))
    assert all(len(v) == 1 for v in offsets.values()) and all(len(v) == 1 for v in pseudonyms.values())
    one, two = offsets["PATIENT-ONE"].pop(), offsets["PATIENT-TWO"].pop()
    assert one != two and all(DATE_SHIFT_RANGE_DAYS[0] <= d <= DATE_SHIFT_RANGE_DAYS[1] for d in (one, two))
    assert pseudonyms["PATIENT-ONE"] != pseudonyms["PATIENT-TWO"]
    text = (tmp_path / "out" / "manifest.json").read_text()
    for value in (one, two):
        assert re.search(rf"(?<![\d.]){abs(value)}(?![\d.])", text) is None, "a date offset appears in the manifest"
    assert "PATIENT-ONE" not in text and "PATIENT-TWO" not in text


def test_keep_identities_copies_dicom_unchanged_and_says_so(tmp_path):
    manifest = run_ingest(SERIES["siemens"], tmp_path / "out", "--keep-identities")
    assert manifest["deidentified"] is False and manifest["deidentification"] is None
    assert manifest["source"] == str(SERIES["siemens"])
    copies = sorted((tmp_path / "out" / "dicom").rglob("*.dcm"))
    originals = {p.read_bytes() for p in SERIES["siemens"].glob("*.dcm")}
    assert len(copies) == 8 and {p.read_bytes() for p in copies} == originals


def test_profile_table_actions():
    """A few Table E.1-1 rows, including masked (repeating group) ones."""
    expected = {0x00100010: "Z", 0x00080018: "U", 0x0020000D: "U", 0x00400275: "X", 0x00081111: "X/Z/D",
                0x00081140: "X/Z/U*", 0x00080081: "X", 0x00100020: "Z/D", 0x60023000: "X", 0x601E4000: "X",
                0x50100000 | 0x0005: "X"}
    for tag, action in expected.items():
        assert profile_action(tag) == action, hex(tag)
    for kept in (0x00200032, 0x00200037, 0x00280030, 0x00281052, 0x00281053, 0x7FE00010):
        assert profile_action(kept) is None, hex(kept)
