"""Reports: JSON summary, key-slice montage PNG, DICOM SEG on the real DICOM series (exact geometry)."""

from __future__ import annotations

import io
import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from insight.cli import main as cli_main
from insight.errors import InputError
from insight.inference import PredictionResult, extract_findings
from insight.io import read_image, write_image
from insight.reports import (build_findings_seg, build_report, findings_label_map, load_source_series,
                             seg_to_label_map)
from insight.reports.montage import montage_pixel_size, render_montage, select_key_slices
from tests.helpers import REAL_DICOM_SERIES

THRESHOLD = 0.5


def _blob_heatmap(image: sitk.Image) -> sitk.Image:
    """Two Gaussian blobs (peaks 0.9 and 0.7, in slices 3 and 5/6) on ``image``'s grid, float32."""
    nx, ny, nz = image.GetSize()
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx].astype(np.float32)
    heat = 0.9 * np.exp(-(((x - 200) / 20) ** 2 + ((y - 250) / 25) ** 2 + ((z - 3) / 1.2) ** 2))
    heat += 0.7 * np.exp(-(((x - 330) / 15) ** 2 + ((y - 230) / 15) ** 2 + ((z - 5.5) / 1.0) ** 2))
    out = sitk.GetImageFromArray(heat.astype(np.float32))
    out.CopyInformation(image)
    return out


@pytest.fixture(scope="module")
def real_image() -> sitk.Image:
    return read_image(REAL_DICOM_SERIES)


@pytest.fixture(scope="module")
def blob_result(real_image) -> PredictionResult:
    heatmap = _blob_heatmap(real_image)
    findings = extract_findings(heatmap, THRESHOLD)
    assert len(findings) == 2
    return PredictionResult(name="A0002", pe_probability=0.83, heatmap=heatmap, findings=findings,
                            model_version="test-blobs", finding_threshold=THRESHOLD,
                            qa={"verdict": "warn", "summary": "test", "flags": [
                                {"code": "thick_slices", "message": "8 mm", "severity": "warn"}],
                                "measurements": {}},
                            source=str(REAL_DICOM_SERIES))


@pytest.fixture(scope="module")
def written_report(blob_result, real_image, tmp_path_factory):
    report = build_report(blob_result, real_image, seg=True)
    out = tmp_path_factory.mktemp("report")
    return report, report.write(out), out


def test_label_map_holds_exactly_the_thresholded_regions(blob_result):
    label_map = sitk.GetArrayFromImage(findings_label_map(blob_result.heatmap, blob_result.findings, THRESHOLD))
    heat = sitk.GetArrayViewFromImage(blob_result.heatmap)
    np.testing.assert_array_equal(label_map > 0, heat >= np.float32(THRESHOLD))
    for finding in blob_result.findings:
        assert int((label_map == finding.label).sum()) == finding.voxel_count
        i, j, k = finding.peak_ijk
        assert label_map[k, j, i] == finding.label


def test_summary_json_has_the_study_facts(written_report, blob_result, real_image):
    report, files, out = written_report
    summary = json.loads(files.summary.read_text())
    assert summary["schema"] == "insight-report/1"
    assert summary["pe_probability"] == pytest.approx(0.83)
    assert summary["model_version"] == "test-blobs"
    assert summary["finding_threshold"] == THRESHOLD
    assert summary["qa"]["verdict"] == "warn" and summary["qa"]["flags"][0]["code"] == "thick_slices"
    assert [f["label"] for f in summary["findings"]] == [1, 2]
    for entry, finding in zip(summary["findings"], blob_result.findings):
        assert entry["centroid_lps_mm"] == pytest.approx(finding.centroid_lps_mm, abs=1e-3)
        assert entry["voxel_count"] == finding.voxel_count
    # finding 1's centroid in LPS: x index 200, y index 250, slice 3 of the real series' grid
    assert summary["findings"][0]["centroid_lps_mm"] == pytest.approx(
        real_image.TransformContinuousIndexToPhysicalPoint((200.0, 250.0, 3.0)), abs=0.05)
    source = load_source_series(REAL_DICOM_SERIES)
    identity = summary["input"]
    assert identity["kind"] == "dicom_series" and identity["n_instances"] == 8
    assert identity["series_instance_uid"] == source[0].SeriesInstanceUID
    assert identity["study_instance_uid"] == source[0].StudyInstanceUID
    assert len(identity["sop_instance_uids_sha256"]) == 64
    assert identity["grid"]["size_xyz"] == [512, 512, 8]
    assert identity["grid"]["spacing_xyz"] == pytest.approx([0.646484, 0.646484, 8.0], abs=1e-5)
    assert "Lung_Dx" not in files.summary.read_text()  # no patient name or ID in the summary
    assert [k["slice_index"] for k in summary["key_slices"]][:2] == [3, 5]  # through the peaks, rank order
    assert summary["key_slices"][0]["findings"] == [1]
    assert summary["seg"]["segments"] == 2 and summary["seg"]["file"] == "A0002_seg.dcm"
    assert sorted(p.name for p in out.iterdir()) == ["A0002_montage.png", "A0002_report.json", "A0002_seg.dcm"]


def test_montage_png_has_the_expected_size_and_content(written_report):
    report, files, _ = written_report
    n_tiles = len(report.summary["key_slices"])
    assert n_tiles == 6
    with Image.open(files.montage) as png:
        assert png.format == "PNG"
        assert png.size == montage_pixel_size(n_tiles) == (1200, 864)
        rgb = np.asarray(png.convert("RGB")).astype(int)
    assert rgb.std() > 20  # not blank
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((r - b > 80) & (r > 150)).sum() > 200  # heatmap overlay (inferno: orange/red)
    assert ((g > 180) & (b > 180) & (r < 80)).sum() > 20  # cyan finding outlines


def _flip_x(image: sitk.Image) -> sitk.Image:
    """The same physical image stored with the x axis reversed (direction -x, origin at the far end)."""
    flipped = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[:, :, ::-1].copy())
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((image.GetSize()[0] - 1, 0, 0)))
    flipped.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return flipped


def test_montage_shows_a_flipped_grid_in_the_same_orientation(blob_result, real_image):
    pictures = []
    for image, heatmap in ((real_image, blob_result.heatmap), (_flip_x(real_image), _flip_x(blob_result.heatmap))):
        findings = extract_findings(heatmap, THRESHOLD)
        label_map = findings_label_map(heatmap, findings, THRESHOLD)
        key_slices = select_key_slices(heatmap, findings, label_map, max_tiles=1)
        with Image.open(io.BytesIO(render_montage(image, heatmap, label_map, key_slices, ["t"]))) as png:
            pictures.append(np.asarray(png.convert("RGB")))
    assert pictures[0].std() > 20
    np.testing.assert_array_equal(pictures[0], pictures[1])  # patient's left on the right in both


def test_seg_references_the_source_series_and_decodes_onto_the_mask_exactly(written_report, real_image):
    report, files, _ = written_report
    seg = pydicom.dcmread(files.seg)
    source = load_source_series(REAL_DICOM_SERIES)
    source_uids = {str(d.SOPInstanceUID) for d in source}
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {str(item.ReferencedSOPInstanceUID) for item in referenced.ReferencedInstanceSequence} == source_uids
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["PE suspicion 1", "PE suspicion 2"]

    labels = sitk.GetArrayFromImage(report.label_map)
    expected_frames = sum(len(set(np.unique(labels[k])) - {0}) for k in range(labels.shape[0]))
    assert int(seg.NumberOfFrames) == expected_frames == 3  # slice 3 (finding 1), slices 5 and 6 (finding 2)
    # each frame derives from the source image at its own position
    by_uid = {str(d.SOPInstanceUID): d for d in source}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == \
            [float(v) for v in by_uid[uid].ImagePositionPatient]

    # geometry: decoding by frame position reproduces the thresholded mask voxel for voxel
    decoded = seg_to_label_map(seg, real_image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(decoded), labels)
    heat = sitk.GetArrayViewFromImage(report.label_map)
    assert (heat > 0).sum() == sum(f["voxel_count"] for f in report.summary["findings"])
    # and independently through highdicom, by referenced source instance in slice order
    ordered = sorted(source, key=lambda d: real_image.TransformPhysicalPointToIndex(
        [float(v) for v in d.ImagePositionPatient])[2])
    by_instance = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        [str(d.SOPInstanceUID) for d in ordered], combine_segments=True)
    np.testing.assert_array_equal(by_instance, labels)


def test_suspicion_mode_makes_one_segment(blob_result, real_image):
    label_map = findings_label_map(blob_result.heatmap, blob_result.findings, THRESHOLD)
    seg = build_findings_seg(label_map, blob_result.findings, load_source_series(REAL_DICOM_SERIES), "v", THRESHOLD,
                             mode="suspicion")
    assert len(seg.SegmentSequence) == 1 and seg.SegmentSequence[0].SegmentLabel == "PE suspicion"
    decoded = sitk.GetArrayFromImage(seg_to_label_map(seg, real_image))
    np.testing.assert_array_equal(decoded, (sitk.GetArrayFromImage(label_map) > 0).astype(np.uint16))


def test_seg_refuses_a_grid_off_the_source_slices(blob_result, real_image):
    shifted = sitk.Image(blob_result.heatmap)
    origin = list(shifted.GetOrigin())
    origin[2] += 4.0  # half a slice: not the source slices any more
    shifted.SetOrigin(origin)
    label_map = findings_label_map(shifted, blob_result.findings, THRESHOLD)
    with pytest.raises(InputError, match="not a slice of the heatmap grid"):
        build_findings_seg(label_map, blob_result.findings, load_source_series(REAL_DICOM_SERIES), "v", THRESHOLD)
    fewer = load_source_series(REAL_DICOM_SERIES)[:-1]
    with pytest.raises(InputError, match="have no source image"):
        build_findings_seg(findings_label_map(blob_result.heatmap, blob_result.findings, THRESHOLD),
                           blob_result.findings, fewer, "v", THRESHOLD)
    with pytest.raises(InputError, match="not a DICOM SEG"):
        seg_to_label_map(load_source_series(REAL_DICOM_SERIES)[0], real_image)


def test_seg_needs_a_dicom_input_and_writes_nothing(blob_result, real_image, tmp_path):
    volume = write_image(real_image, tmp_path / "in" / "case.nii.gz")
    as_file = PredictionResult(**{**blob_result.__dict__, "name": "case", "source": str(volume)})
    with pytest.raises(InputError, match="needs a DICOM series input"):
        build_report(as_file, real_image, seg=True)
    report = build_report(as_file, real_image, seg=False)  # without --seg a volume file is fine
    assert report.summary["input"]["kind"] == "file" and len(report.summary["input"]["sha256"]) == 64
    assert report.seg is None and report.summary["files"]["seg"] is None


def test_cli_report_on_the_real_series_with_the_demo_model(demo_model_path, tmp_path, caplog):
    out = tmp_path / "out"
    code = cli_main(["report", str(REAL_DICOM_SERIES), "--model", str(demo_model_path), "--out", str(out), "--seg"])
    assert code == 0
    summary = json.loads((out / "A0002_B40f_8slices_report.json").read_text())
    assert 0.0 <= summary["pe_probability"] <= 1.0
    assert summary["model_version"].startswith("insight-")
    # a non-contrast chest CT: QA says not a CTPA, and it is still reported
    assert "not_ctpa" in {flag["code"] for flag in summary["qa"]["flags"]}
    seg_path = out / "A0002_B40f_8slices_seg.dcm"
    if not summary["findings"]:  # the demo model: no region reaches its threshold here -> no SEG, and why
        assert summary["seg"]["file"] is None and "no findings" in summary["seg"]["reason"]
        assert not seg_path.exists()
    else:  # another model may find regions: then the SEG holds one segment per finding
        assert len(pydicom.dcmread(seg_path).SegmentSequence) == len(summary["findings"])
    with Image.open(out / "A0002_B40f_8slices_montage.png") as png:
        assert png.size == montage_pixel_size(len(summary["key_slices"]))


def test_cli_report_bad_inputs_give_clear_errors(demo_model_path, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert cli_main(["report", str(tmp_path / "missing.nii.gz"), "--model", str(demo_model_path),
                     "--out", str(out)]) == 1
    assert "input not found" in caplog.text
    assert not out.exists() or not any(out.iterdir())
    assert cli_main(["report", str(REAL_DICOM_SERIES), "--out", str(out), "--threshold", "1.5"]) == 2
    assert "--threshold must be in (0, 1]" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert cli_main(["report", str(REAL_DICOM_SERIES), "--out", str(tmp_path / "afile")]) == 2
    assert "is not a folder" in capsys.readouterr().err
