"""The MONAI Label server on a real PACS: Orthanc + DICOMweb plugin on loopback as ``--studies``.

Orthanc (own instance for this module) holds a de-identified copy of the real series
(tests/data/real-ct/A0002_B40f_8slices, de-identified with ``insight.dicom.deid``) and two phantoms
(``insight phantom --n 2 --seed 5 --shape 64 64 40``) written as CT DICOM series by
``insight.phantom.dicom_export``. The server (shipped demo model) runs with
``--studies http://127.0.0.1:PORT/dicom-web``: it lists the PACS series, infers on one, and a saved
final label goes back to the PACS as a DICOM SEG that decodes to the saved mask voxel for voxel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk

from insight.cli import main as cli_main
from insight.dicom.deid import DeidOptions, Deidentifier
from insight.dicomweb import PacsClient
from insight.errors import InputError
from insight.inference import InsightPredictor
from insight.io import read_image, write_image
from insight.phantom.dicom_export import RESCALE_INTERCEPT, write_dicom_series
from insight.reports import load_source_series, seg_to_label_map
from tests.conftest import APP_DIR, MonaiLabelServer, parse_infer_multipart, read_image_bytes
from tests.helpers import REAL_DICOM_SERIES, make_volume, oblique_direction
from tests.orthanc_fixture import OrthancServer, start_orthanc

sys.path.insert(0, str(APP_DIR))  # the app's own package, imported as ``lib`` (MONAI Label's layout)
from lib.datastore.dicomweb import label_to_seg  # noqa: E402

TIMEOUT_S = 120
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PHANTOM_ARGS = ["--n", "2", "--seed", "5", "--shape", "64", "64", "40"]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def series(pacs: OrthancServer, tmp_path_factory) -> dict[str, Path]:
    """Load the PACS; SeriesInstanceUID -> a local folder holding exactly what was stored."""
    root = tmp_path_factory.mktemp("pacs_data")
    client = PacsClient(pacs.dicomweb_url, timeout_s=30)
    loaded: dict[str, Path] = {}

    deid_folder = root / "real_deid"
    deid_folder.mkdir()
    deidentifier = Deidentifier(DeidOptions(secret=b"test-server-dicomweb"))
    for path in sorted(REAL_DICOM_SERIES.iterdir()):
        dataset = deidentifier.deidentify(pydicom.dcmread(path))
        dataset.save_as(deid_folder / path.name, write_like_original=False)
    original = load_source_series(REAL_DICOM_SERIES)[0]
    deid = load_source_series(deid_folder)[0]
    assert deid.SeriesInstanceUID != original.SeriesInstanceUID and deid.PatientName != original.PatientName
    client.store_folder(deid_folder)
    loaded[str(deid.SeriesInstanceUID)] = deid_folder

    assert cli_main(["phantom", *PHANTOM_ARGS, "--out", str(root / "phantoms"), "--no-progress"]) == 0
    for nifti in sorted((root / "phantoms").glob("*.nii.gz")):
        name = nifti.name.removesuffix(".nii.gz")
        uids = write_dicom_series(sitk.ReadImage(str(nifti)), root / "dicom" / name, name=name)
        client.store_folder(root / "dicom" / name)
        loaded[uids.series_instance_uid] = root / "dicom" / name
    assert len(loaded) == 3
    return loaded


@pytest.fixture(scope="module")
def server(monailabel_server_factory, pacs: OrthancServer, series, demo_model_path: Path) -> Iterator[MonaiLabelServer]:
    server = monailabel_server_factory(pacs.dicomweb_url, demo_model_path, conf={"auto_scoring": "false"})
    yield server
    server.stop()  # its PACS goes with this module


def _phantoms(series: dict[str, Path]) -> list[str]:
    return sorted(uid for uid, folder in series.items() if folder.parent.name == "dicom")


def _real(series: dict[str, Path]) -> str:
    return next(uid for uid, folder in series.items() if folder.name == "real_deid")


def _seg_series(pacs: OrthancServer, study: str) -> list[str]:
    found = PacsClient(pacs.dicomweb_url)._client.search_for_series(study_instance_uid=study,
                                                                    search_filters={"Modality": "SEG"})
    return [item["0020000E"]["Value"][0] for item in found]


def test_phantom_dicom_export_round_trip(tmp_path):
    image = make_volume(size_xyz=(40, 36, 12), spacing=(0.7, 0.9, 2.5), origin=(-20.25, 15.5, -40.125),
                        direction=oblique_direction(20.0), seed=3)
    uids = write_dicom_series(image, tmp_path / "series", name="case_01")
    back = read_image(tmp_path / "series")
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    files = sorted((tmp_path / "series").iterdir())
    first = pydicom.dcmread(files[0])
    assert len(files) == 12 and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and first.Modality == "CT"
    assert first.PixelRepresentation == 1 and float(first.RescaleIntercept) == RESCALE_INTERCEPT
    assert first.SeriesInstanceUID == uids.series_instance_uid and first.PatientName == "PHANTOM^case_01"
    assert not first.StudyDate and not first.get("InstitutionName") and not first.get("PatientBirthDate")
    # a left-handed volume would be read back mirrored: refused, nothing written
    flipped = make_volume(direction=oblique_direction(20.0, flip_x=True))
    with pytest.raises(InputError, match="left-handed"):
        write_dicom_series(flipped, tmp_path / "flipped", name="x")
    assert not (tmp_path / "flipped").exists() and {p.name for p in tmp_path.iterdir()} == {"series"}
    with pytest.raises(InputError, match="integer HU"):
        write_dicom_series(sitk.Cast(image, sitk.sitkFloat32), tmp_path / "float", name="x")


def test_datastore_lists_the_pacs_series(server, series):
    stats = requests.get(server.url("/datastore/"), timeout=TIMEOUT_S).json()
    assert stats["total"] == 3
    listed = requests.get(server.url("/datastore/"), params={"output": "all"}, timeout=TIMEOUT_S).json()["objects"]
    assert set(listed) == set(series)
    assert not any(entry["image"]["info"].get("cached", True) for entry in listed.values())  # nothing fetched yet
    # a weak label on a series nobody opened yet: the series is fetched, the label kept in its info
    uid = _phantoms(series)[1]
    weak = requests.put(server.url(f"/insight/weak-labels/{uid}"), json={"pe": 1, "annotator": "reader-1"},
                        timeout=TIMEOUT_S)
    assert weak.status_code == 200, weak.text[:500]
    assert requests.get(server.url(f"/insight/weak-labels/{uid}"), timeout=TIMEOUT_S).json()["pe"] == 1


def test_infer_on_a_pacs_series_gives_a_heatmap_on_its_grid(server, series, demo_model_path):
    uid = _phantoms(series)[0]
    response = requests.post(server.url("/infer/pe_insight"), params={"image": uid}, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text[:500]
    answer = parse_infer_multipart(response)
    heatmap = read_image_bytes(answer.image)
    local = read_image(series[uid])  # the same series, read from what was stored on the PACS
    assert heatmap.GetSize() == local.GetSize()
    np.testing.assert_allclose(heatmap.GetOrigin(), local.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(heatmap.GetSpacing(), local.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(heatmap.GetDirection(), local.GetDirection(), atol=1e-6)
    expected = InsightPredictor.from_checkpoint(demo_model_path, device="cpu").predict_image(local, name=uid)
    assert answer.params["pe_probability"] == pytest.approx(expected.pe_probability, abs=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(heatmap), sitk.GetArrayFromImage(expected.heatmap), atol=1e-5)
    missing = requests.post(server.url("/infer/pe_insight"), params={"image": "1.2.3.4"}, timeout=TIMEOUT_S)
    assert missing.status_code == 404 and "1.2.3.4" in missing.json()["detail"]
    # the de-identified real chest CT from the PACS: predicted, and flagged as not a CTPA
    real = requests.post(server.url("/infer/pe_insight"), params={"image": _real(series), "output": "json"},
                         timeout=TIMEOUT_S)
    assert real.status_code == 200, real.text[:500]
    assert "not_ctpa" in {flag["code"] for flag in real.json()["qa"]["flags"]}


def _mask_on(grid: sitk.Image, seed: int) -> sitk.Image:
    """A uint8 mask on ``grid``: a box on some slices and scattered voxels, other slices empty."""
    nx, ny, nz = grid.GetSize()
    mask = np.zeros((nz, ny, nx), dtype=np.uint8)
    mask[1: nz - 2, ny // 3: ny // 2, nx // 4: nx // 2] = 1
    rng = np.random.default_rng(seed)
    mask[rng.integers(0, nz - 1, 40), rng.integers(0, ny, 40), rng.integers(0, nx, 40)] = 1
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(grid)
    return image


@pytest.mark.parametrize("which", ["real", "phantom"])
def test_saved_label_goes_to_the_pacs_as_seg_and_reads_back_equal(server, pacs, series, which, tmp_path):
    uid = _real(series) if which == "real" else _phantoms(series)[1]
    grid = read_image(series[uid])
    mask = _mask_on(grid, seed=len(which))
    label_path = write_image(mask, tmp_path / "label.nii.gz")
    study = str(load_source_series(series[uid])[0].StudyInstanceUID)
    assert _seg_series(pacs, study) == []
    saved = put_label(server, uid, label_path, {"annotator": "reader-1", "label_info": [{"name": "pe", "idx": 1}]})
    assert saved.status_code == 200, saved.text[:500]
    assert saved.json()["version"] == 1 and saved.json()["provenance"]["saved_by"] == "reader-1"

    (seg_uid,) = _seg_series(pacs, study)
    (seg,) = PacsClient(pacs.dicomweb_url).retrieve_series(study, seg_uid)
    source = load_source_series(series[uid])
    assert seg.SOPClassUID == SEG_CLASS and seg.StudyInstanceUID == study and seg.PatientID == source[0].PatientID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == uid
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == \
        {str(d.SOPInstanceUID) for d in source}
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "pe" and segment.SegmentAlgorithmType == "MANUAL"
    assert str(seg.ContentCreatorName) == "reader-1"
    decoded = seg_to_label_map(seg, grid)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(decoded), sitk.GetArrayFromImage(mask))

    info = requests.get(server.url("/datastore/label/info"), params={"label": uid, "tag": "final"},
                        timeout=TIMEOUT_S).json()
    assert info["SeriesInstanceUID"] == seg_uid and info["SOPInstanceUID"] == str(seg.SOPInstanceUID)
    if which == "real":
        return
    # a second version (empty: "no embolus here") is a second SEG series; the first one stays
    empty = write_image(_mask_on(grid, seed=0) * 0, tmp_path / "empty.nii.gz")
    again = put_label(server, uid, empty, {"annotator": "reader-2"})
    assert again.status_code == 200, again.text[:500]
    assert again.json()["version"] == 2
    (new_uid,) = set(_seg_series(pacs, study)) - {seg_uid}
    (second,) = PacsClient(pacs.dicomweb_url).retrieve_series(study, new_uid)
    assert not sitk.GetArrayFromImage(seg_to_label_map(second, grid)).any()
    versions = requests.get(server.url(f"/insight/labels/{uid}/versions"), params={"tag": "final"},
                            timeout=TIMEOUT_S).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2] and versions[0]["provenance"]["saved_by"] == "reader-1"


def put_label(server: MonaiLabelServer, image: str, path: Path, params: dict | None = None) -> requests.Response:
    return requests.put(server.url("/datastore/label"), params={"image": image, "tag": "final"},
                        files={"label": (path.name, path.read_bytes(), "application/octet-stream")},
                        data={"params": json.dumps(params or {})}, timeout=TIMEOUT_S)


def test_bad_labels_are_refused_before_anything_reaches_the_pacs(server, pacs, series, tmp_path):
    uid = _phantoms(series)[0]
    grid = read_image(series[uid])
    study = str(load_source_series(series[uid])[0].StudyInstanceUID)
    before = _seg_series(pacs, study)
    path = write_image(sitk.Image([8, 8, 8], sitk.sitkUInt8), tmp_path / "small.nii.gz")
    response = put_label(server, uid, path)
    assert response.status_code == 422 and "grid" in response.json()["detail"]
    assert put_label(server, "1.2.3.4", path).status_code == 404
    assert _seg_series(pacs, study) == before
    # the SEG builder itself: a label shifted by half a voxel is not on the image's slices
    shifted = _mask_on(grid, seed=1)
    shifted.SetOrigin([o + 0.5 * s for o, s in zip(grid.GetOrigin(), grid.GetSpacing())])
    with pytest.raises(InputError, match="origin"):
        label_to_seg(shifted, grid, load_source_series(series[uid]))


def test_a_seg_stored_on_the_pacs_becomes_the_final_label(server, pacs, series):
    uid = _phantoms(series)[0]
    grid = read_image(series[uid])
    mask = _mask_on(grid, seed=9)
    seg = label_to_seg(mask, grid, load_source_series(series[uid]), segment_names={1: "pe"},
                       provenance={"method": "pseudo", "model": "other-ai", "model_version": "v9", "saved_by": "AI^"})
    PacsClient(pacs.dicomweb_url).store([seg])
    training = requests.get(server.url("/datastore/"), params={"output": "train"}, timeout=TIMEOUT_S).json()
    assert {Path(item["image"]).name.removesuffix(".nii.gz") for item in training} >= {uid}
    fetched = requests.get(server.url("/datastore/label"), params={"label": uid, "tag": "final"}, timeout=TIMEOUT_S)
    assert fetched.status_code == 200
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image_bytes(fetched.content)),
                                  sitk.GetArrayFromImage(mask))
    (version,) = requests.get(server.url(f"/insight/labels/{uid}/versions"), params={"tag": "final"},
                              timeout=TIMEOUT_S).json()["versions"]
    assert version["provenance"]["method"] == "pseudo" and version["provenance"]["model_version"] == "v9"


def test_qa_on_a_pacs_series_reads_its_dicom_headers(server, pacs, series, tmp_path):
    """A series with a slice missing: the cached NIfTI looks evenly spaced, only the headers tell."""
    source = series[_phantoms(series)[0]]
    files = sorted(source.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                        .ImagePositionPatient[2]))
    gapped = tmp_path / "gapped"
    gapped.mkdir()
    uid = pydicom.uid.generate_uid()
    for i, path in enumerate(files):
        if i == len(files) // 2:
            continue  # the lost slice
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = uid
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(gapped / path.name, write_like_original=False)
    PacsClient(pacs.dicomweb_url, timeout_s=30).store_folder(gapped)

    response = requests.post(server.url("/infer/pe_insight"), params={"image": uid, "output": "json"},
                             timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text[:500]
    flags = {flag["code"]: flag for flag in response.json()["qa"]["flags"]}
    assert "missing_slices" in flags and flags["missing_slices"]["severity"] == "fail", sorted(flags)
    assert response.json()["qa"]["verdict"] == "fail"
    # the voxels alone (the cached NIfTI, read without its headers) do not show the gap
    (cached,) = server.studies_dir.rglob(f"{uid}.nii.gz")  # the datastore cache: <uid>.nii.gz beside <uid>/
    assert (cached.parent / uid).is_dir()
    voxels_only = InsightPredictor.from_checkpoint(server.model_path, device="cpu").predict_file(cached)
    assert "missing_slices" not in [flag["code"] for flag in voxels_only.qa["flags"]]
