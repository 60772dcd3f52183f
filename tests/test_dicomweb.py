"""DICOMweb against a real Orthanc (DICOMweb plugin) on loopback: query, retrieve, analyze, store the SEG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from insight.cli import main as cli_main
from insight.dicomweb import PacsClient, analyze_study
from insight.errors import InputError, InsightError
from insight.inference import InsightPredictor
from insight.reports import load_source_series, predict_for_report, seg_to_label_map
from tests.helpers import REAL_DICOM_SERIES
from tests.orthanc_fixture import free_loopback_port, orthanc_server  # noqa: F401 (fixture)

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def source():
    """Headers of the real series, and its study and series UIDs."""
    datasets = load_source_series(REAL_DICOM_SERIES)
    return datasets, str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)


@pytest.fixture(scope="module")
def pacs(orthanc_server, source):  # noqa: F811
    """The Orthanc loaded with the real series (STOW-RS through our client)."""
    client = PacsClient(orthanc_server.dicomweb_url, timeout_s=30)
    stored = client.store_folder(REAL_DICOM_SERIES)
    assert sorted(stored) == sorted(str(d.SOPInstanceUID) for d in source[0])
    return client


@pytest.fixture(scope="module")
def predictor(demo_model_path):
    return InsightPredictor.from_checkpoint(demo_model_path, device="cpu")


def _seg_series(client: PacsClient, study: str) -> list[str]:
    found = client._client.search_for_series(study_instance_uid=study, search_filters={"Modality": "SEG"})
    return [item["0020000E"]["Value"][0] for item in found]


def test_query_finds_the_ct_series(pacs, source):
    datasets, study, series = source
    (info,) = pacs.find_series(study)
    assert info.series_instance_uid == series and info.modality == "CT" and info.n_instances == 8
    retrieved = pacs.retrieve_series(study, series)
    assert sorted(str(d.SOPInstanceUID) for d in retrieved) == sorted(str(d.SOPInstanceUID) for d in datasets)
    assert all(d.pixel_array.shape == (512, 512) for d in retrieved)


def test_analyze_stores_a_seg_that_reads_back_equal(pacs, source, predictor):
    datasets, study, series = source
    local, image = predict_for_report(predictor, REAL_DICOM_SERIES)
    local_heat = sitk.GetArrayFromImage(local.heatmap)
    # This non-CTPA series has no region at the model's threshold; cut at the top 1% of its nonzero
    # heatmap so that the SEG has content whatever the demo model's exact values are (the calibrated
    # demo model's heatmap on this non-contrast CT peaks at about 1e-9).
    threshold = float(np.quantile(local_heat[local_heat > 0], 0.99))
    assert threshold > 0

    analysis = analyze_study(pacs, study, predictor, store=True, threshold=threshold)
    assert analysis.series_instance_uid == series
    # the series fetched over DICOMweb is predicted exactly as the local folder
    assert analysis.result.pe_probability == pytest.approx(local.pe_probability, abs=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(analysis.result.heatmap), local_heat, atol=1e-6)
    findings = analysis.result.findings
    assert findings and analysis.stored_seg_uid == str(analysis.report.seg.SOPInstanceUID)
    assert analysis.report.summary["seg"]["stored"].endswith(analysis.stored_seg_uid)
    assert analysis.report.summary["input"]["series_instance_uid"] == series

    # read it back from Orthanc
    (seg_series,) = _seg_series(pacs, study)
    (seg,) = pacs.retrieve_series(study, seg_series)
    assert seg.SOPClassUID == SEG_CLASS and str(seg.SOPInstanceUID) == analysis.stored_seg_uid
    assert seg.StudyInstanceUID == study
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == \
        {str(d.SOPInstanceUID) for d in datasets}
    assert len(seg.SegmentSequence) == len(findings)
    labels = sitk.GetArrayFromImage(analysis.report.label_map)
    assert int(seg.NumberOfFrames) == sum(len(set(np.unique(labels[k])) - {0}) for k in range(labels.shape[0]))
    # decoded onto the CT grid, the stored SEG is the thresholded findings mask, voxel for voxel
    decoded = sitk.GetArrayFromImage(seg_to_label_map(seg, image))
    np.testing.assert_array_equal(decoded, labels)
    assert (decoded > 0).sum() == sum(f.voxel_count for f in findings)


def test_cli_analyze_prints_the_summary_and_writes_the_report(pacs, source, demo_model_path, tmp_path, capsys):
    _, study, series = source
    seg_series_before = _seg_series(pacs, study)
    out = tmp_path / "report"
    code = cli_main(["dicomweb", "analyze", "--url", pacs.url, "--study", study, "--model", str(demo_model_path),
                     "--out", str(out), "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input"]["kind"] == "dicom_series" and summary["input"]["series_instance_uid"] == series
    assert summary["input"]["source"] == f"{pacs.url}/studies/{study}/series/{series}"
    assert "not_ctpa" in {flag["code"] for flag in summary["qa"]["flags"]}
    assert json.loads((out / f"{series}_report.json").read_text())["pe_probability"] == summary["pe_probability"]
    assert (out / f"{series}_montage.png").stat().st_size > 10_000
    assert _seg_series(pacs, study) == seg_series_before  # without --store nothing goes to the PACS


def test_bad_study_server_or_url_give_clear_errors(pacs, predictor, demo_model_path, capsys):
    with pytest.raises(InputError, match="not found"):
        analyze_study(pacs, "1.2.3.4.5.6", predictor)
    with pytest.raises(InputError, match="not part of the study"):
        analyze_study(pacs, str(load_source_series(REAL_DICOM_SERIES)[0].StudyInstanceUID), predictor,
                      series_instance_uid="1.2.3")
    with pytest.raises(InsightError, match="cannot reach the DICOMweb server"):
        PacsClient(f"http://127.0.0.1:{free_loopback_port()}/dicom-web", timeout_s=5,
                   attempts=1).find_series("1.2.3")
    with pytest.raises(InputError, match="--url must be an http"):
        PacsClient("ftp://example/dicom-web")
    assert cli_main(["dicomweb", "analyze", "--url", pacs.url, "--study", "1.2.3.4.5.6",
                     "--model", str(demo_model_path), "--device", "cpu"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_store_uploads_a_second_vendors_series(orthanc_server, capsys):  # noqa: F811
    folder = REAL_DICOM_SERIES.parent / "A0001_5mm_5slices"  # Philips, Implicit VR, private tags
    assert cli_main(["dicomweb", "store", "--url", orthanc_server.dicomweb_url, str(folder)]) == 0
    study = str(load_source_series(folder)[0].StudyInstanceUID)
    (info,) = PacsClient(orthanc_server.dicomweb_url).find_series(study)
    assert info.modality == "CT" and info.n_instances == 5
    assert cli_main(["dicomweb", "store", "--url", orthanc_server.dicomweb_url, str(folder / "1-30.dcm")]) == 2
    assert "is not a folder" in capsys.readouterr().err
