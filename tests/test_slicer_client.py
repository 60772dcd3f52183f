"""SlicerInsightLib (the Slicer-free half of the 3D Slicer extension) against a real server.

The client, multipart parser, result models, geometry, colormap, findings and label helpers run in
Slicer's Python; here they run in the project's venv against real MONAI Label servers started by
``tests/conftest.py``'s factory on loopback: the shipped demo model on a copy of the sample studies
(analysis, upload, labels with provenance and versions, weak labels, leases), and a campaign server
on six small phantoms with active learning off (training followed to the new model version, the
segmentation model before and after it has weights). Only the two faults the real server cannot be
made to produce (an answer that never comes, an answer that is not MONAI Label's) use tiny local
socket servers.

Also checked: every file of the module and of SlicerInsightLib parses under Python 3.9 grammar,
the Lib imports nothing but the standard library, requests and numpy (no torch, SimpleITK,
nibabel, cgi, slicer, qt), and the module file, its .ui, CMakeLists.txt and icon agree.
"""

from __future__ import annotations

import ast
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from insight.io import write_image
from tests.conftest import REPO, SERVER_START_TIMEOUT_S, MonaiLabelServer, parse_infer_multipart, read_image_bytes
from tests.helpers import make_volume, oblique_direction

MODULE_DIR = REPO / "SlicerInsight"
sys.path.insert(0, str(MODULE_DIR))

from SlicerInsightLib import colormap, findings, geometry, labels, multipart, nifti  # noqa: E402
from SlicerInsightLib.client import InsightClient, Timeouts, content_image_id, image_id_is_valid  # noqa: E402
from SlicerInsightLib.errors import (AuthenticationError, InvalidInputError, MalformedAnswerError,  # noqa: E402
                                     NotFoundError, NotOfferedError, NotReadyError, RequestRejectedError,
                                     ServerFailureError, ServerTimeoutError, ServerUnreachableError,
                                     SlicerInsightError)
from SlicerInsightLib.results import TrainStatus  # noqa: E402

LIB_DIR = MODULE_DIR / "SlicerInsightLib"
MODULE_FILE = MODULE_DIR / "SlicerInsight.py"
#: A PE-positive and a PE-negative sample study (sample-data/README.md).
PE_STUDY = "phantom_s7_0002"
NO_PE_STUDY = "phantom_s7_0000"
#: mm; voxel centres must land on the same patient point within this.
GEOMETRY_TOLERANCE_MM = 1e-3
#: Stub servers answer (or not) within this; the client's read timeout in the timeout test.
SHORT_TIMEOUT_S = 0.5
#: Seconds a one-epoch training on six small phantoms may take (2 shared CPU cores).
TRAIN_TIMEOUT_S = 180


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def server(monailabel_server_factory, sample_studies_dir: Path, demo_model_path: Path,
           campaign_server_start) -> MonaiLabelServer:
    """The shipped demo model serving a copy of the sample studies, as ``monailabel_server`` but
    without automatic scoring (no strategy used here needs scores, and scoring all studies at start
    would take the CPU from the tests). Asking for it also starts the campaign server in the background."""
    return monailabel_server_factory(sample_studies_dir, demo_model_path, conf={"auto_scoring": "false"})


@pytest.fixture(scope="module")
def client(server: MonaiLabelServer) -> InsightClient:
    return InsightClient(server.base_url)


@pytest.fixture(scope="module")
def pe_result(client: InsightClient):
    """The analysis of the PE sample study (one inference shared by several tests)."""
    return client.infer(PE_STUDY)


def unique_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def itk_geometry(image: sitk.Image) -> geometry.VolumeGeometry:
    """The independent reference: SimpleITK's (LPS) geometry, converted to RAS by geometry.py."""
    return geometry.geometry_from_itk(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def sample_voxels(size_ijk, count: int = 20, seed: int = 0) -> np.ndarray:
    """The 8 corner voxels plus ``count`` random voxel centres, shape [N, 3] (i, j, k)."""
    rng = np.random.default_rng(seed)
    random = np.column_stack([rng.integers(0, n, size=count) for n in size_ijk]).astype(np.float64)
    return np.vstack([geometry.voxel_corners(size_ijk), random])


def assert_maps_like_itk(matrix_ras: np.ndarray, image: sitk.Image) -> None:
    """Every sampled voxel centre goes, through ``matrix_ras``, to the RAS point of the same voxel in
    SimpleITK's LPS world (``TransformContinuousIndexToPhysicalPoint``, flipped to RAS)."""
    for ijk in sample_voxels(image.GetSize()):
        lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])
        expected_ras = geometry.lps_to_ras(lps)
        actual_ras = geometry.apply_matrix(matrix_ras, ijk)
        np.testing.assert_allclose(actual_ras, expected_ras, atol=GEOMETRY_TOLERANCE_MM,
                                   err_msg=f"voxel {ijk} lands elsewhere")


def assert_clear_message(err: SlicerInsightError) -> str:
    """A user-facing message: one short text, no traceback, no HTML."""
    message = str(err)
    assert message and len(message) < 600, message
    assert "Traceback" not in message and "<html" not in message.lower(), message
    assert "\n" not in message, message
    return message


LEFT_HANDED = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
RAS_ALIGNED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
PERMUTED = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
#: Directions (LPS, row-major) the geometry tests cover: axis-aligned, oblique, oblique with x flipped
#: (RAS-like), exactly RAS-aligned (both in-plane axes flipped), left-handed, permuted axes.
DIRECTIONS = {
    "identity": None,
    "oblique": oblique_direction(20.0),
    "oblique_flipped": oblique_direction(35.0, flip_x=True),
    "ras_aligned": RAS_ALIGNED,
    "left_handed": LEFT_HANDED,
    "permuted": PERMUTED,
}


# ----------------------------------------------------------------------------- server info
def test_info_lists_models_with_version(client: InsightClient, server: MonaiLabelServer) -> None:
    raw = server.info()
    info = client.info()
    assert info.name == raw["name"]
    assert "pe_insight" in info.models
    model = info.models["pe_insight"]
    assert model.model_version and model.model_version == raw["models"]["pe_insight"]["model_version"]
    assert model.ready and model.error is None
    assert model.labels == {"pe": 1}
    assert client.model("pe_insight") == model
    with pytest.raises(NotFoundError, match="no model 'nonexistent'.*pe_insight"):
        client.model("nonexistent")
    assert info.strategy_names == list(raw["strategies"])
    assert info.trainers == raw["trainers"]


def test_list_and_check_images(client: InsightClient) -> None:
    images = client.list_images()
    assert PE_STUDY in images and NO_PE_STUDY in images
    assert client.has_image(PE_STUDY)
    assert not client.has_image("no_such_image_here")
    with pytest.raises(InvalidInputError, match="not valid"):
        client.has_image("../etc/passwd")


# ----------------------------------------------------------------------------- analysis
def test_infer_datastore_image(pe_result, client: InsightClient, server: MonaiLabelServer) -> None:
    result = pe_result
    assert result.image_id == PE_STUDY and result.model == "pe_insight"
    assert 0.0 <= result.pe_probability <= 1.0
    assert result.model_version == client.model().model_version
    assert result.has_heatmap and result.heatmap_filename.endswith(".nii.gz")
    assert isinstance(result.findings, list)
    assert result.params["name"] == PE_STUDY

    ct = sitk.ReadImage(str(server.studies_dir / f"{PE_STUDY}.nii.gz"))
    values, heatmap_geometry = result.heatmap_volume()
    # the Lib's NIfTI reader gives SimpleITK's voxels, in the same [K, J, I] order
    reference = read_image_bytes(result.heatmap)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(reference))
    assert values.dtype == np.float32 and values.shape == ct.GetSize()[::-1]
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0

    # the heatmap's matrix (from its own header) maps voxel centres onto the CT's patient points
    assert heatmap_geometry.size_ijk == ct.GetSize()
    assert_maps_like_itk(heatmap_geometry.ijk_to_ras, ct)
    ct_own = geometry.nifti_geometry((server.studies_dir / f"{PE_STUDY}.nii.gz").read_bytes())
    assert heatmap_geometry.same_grid(ct_own, atol_mm=GEOMETRY_TOLERANCE_MM)
    np.testing.assert_allclose(heatmap_geometry.ijk_to_lps, itk_geometry(ct).ijk_to_lps, atol=GEOMETRY_TOLERANCE_MM)


def test_findings_locations_in_ras(pe_result) -> None:
    """Every finding's RAS location is its LPS centroid flipped, and the heatmap's own matrix applied
    to its voxel centroid; findings cover no more voxels than the heatmap has above threshold."""
    values, heatmap_geometry = pe_result.heatmap_volume()
    threshold = pe_result.finding_threshold
    assert threshold is not None and 0.0 < threshold <= 1.0
    above = int(np.count_nonzero(values >= threshold))
    assert sum(row.voxel_count for row in pe_result.findings) <= above
    if above == 0:
        assert not pe_result.findings
    scores = [row.peak_score for row in pe_result.findings]
    assert scores == sorted(scores, reverse=True)
    for row in pe_result.findings:
        assert row.peak_score >= threshold - 1e-6
        np.testing.assert_allclose(row.centroid_ras, geometry.lps_to_ras(row.centroid_lps))
        np.testing.assert_allclose(row.centroid_ras, heatmap_geometry.ijk_to_ras_points(row.centroid_ijk), atol=0.02)
        assert values[tuple(int(v) for v in reversed(row.peak_ijk))] == pytest.approx(row.peak_score, abs=2e-4)
        cells = findings.table_cells(row)
        assert len(cells) == len(findings.TABLE_COLUMNS) and cells[0] == str(row.rank)
    assert findings.visible_findings(pe_result.findings, 1.01) == []


def test_infer_json_only(client: InsightClient, pe_result) -> None:
    result = client.infer(PE_STUDY, with_heatmap=False)
    assert result.heatmap is None and not result.has_heatmap
    assert result.pe_probability == pytest.approx(pe_result.pe_probability, abs=1e-6)
    with pytest.raises(MalformedAnswerError, match="no heatmap"):
        result.heatmap_geometry()


def test_infer_file_without_datastore(client: InsightClient, tmp_path: Path) -> None:
    path = write_image(make_volume(direction=oblique_direction(15.0), seed=3), tmp_path / "scan_upload.nii.gz")
    result = client.infer_file(path)
    assert 0.0 <= result.pe_probability <= 1.0
    assert_maps_like_itk(result.heatmap_geometry().ijk_to_ras, sitk.ReadImage(str(path)))
    assert "scan_upload" not in client.list_images()


# ----------------------------------------------------------------------------- multipart
def test_multipart_matches_reference_decoder(server: MonaiLabelServer, pe_result) -> None:
    """The Lib's parser and requests_toolbelt's decoder read the server's raw answer identically."""
    response = requests.post(server.url("/infer/pe_insight"), params={"image": PE_STUDY}, timeout=600)
    response.raise_for_status()
    reference = parse_infer_multipart(response)
    parts = multipart.parse_multipart(response.content, response.headers["content-type"])
    by_name = {part.name: part for part in parts}
    assert set(by_name) == {"params", "image"}
    assert json.loads(by_name["params"].text()) == reference.params
    assert by_name["params"].content_type == "application/json"
    assert by_name["image"].content == reference.image
    assert by_name["image"].filename == reference.image_filename


def _body(boundary: str, parts, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    chunks = [preamble + (b"\r\n" if preamble else b"")]
    for headers, content in parts:
        chunks.append(b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n")
    chunks.append(b"--" + boundary.encode() + b"--" + epilogue)
    return b"".join(chunks)


BINARY_TRAPS = [
    b"",
    b"\r\n",
    b"--",
    b"\r\n--\r\n",
    b"line1\r\nline2\r\n\r\n--not the boundary--\r\n",
    b"\r\n--b0undar",  # a near-miss of the delimiter (a prefix of it)
    b"\x00\xff\r\n--\x1f\x8b" * 50,
]


@pytest.mark.parametrize("content", BINARY_TRAPS, ids=range(len(BINARY_TRAPS)))
def test_multipart_binary_content_kept_exactly(content: bytes) -> None:
    boundary = "b0undary"
    trap = content + b"\r\n--b0undaryX and more"  # the boundary followed by text is not a delimiter line
    body = _body(boundary, [
        (b'Content-Disposition: form-data; name="params"\r\nContent-Type: application/json', b'{"a": 1}'),
        (b'Content-Disposition: form-data; name="image"; filename="h.nii.gz"\r\n'
         b"Content-Type: application/octet-stream", trap),
    ], preamble=b"preamble to ignore", epilogue=b"\r\nepilogue to ignore")
    parts = multipart.parse_multipart(body, f"multipart/form-data; boundary={boundary}")
    assert [p.name for p in parts] == ["params", "image"]
    assert json.loads(parts[0].text()) == {"a": 1}
    assert parts[1].content == trap and parts[1].filename == "h.nii.gz"


def test_multipart_random_binary_round_trip() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        payload = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 4000)), dtype=np.uint8).tobytes())
        for _ in range(5):  # plant CRLFs and dashes
            at = int(rng.integers(0, len(payload) + 1))
            payload[at:at] = [b"\r\n", b"--", b"\r\n--", b"\n--"][int(rng.integers(0, 4))]
        boundary = uuid.uuid4().hex
        body = _body(boundary, [(b'Content-Disposition: form-data; name="image"; filename="x.bin"', bytes(payload))])
        (part,) = multipart.parse_multipart(body, f'multipart/form-data; boundary="{boundary}"')
        assert part.content == bytes(payload)


def test_multipart_quoted_boundary_and_header_forms() -> None:
    boundary = "weird boundary with=chars'()+_,-./:?"
    body = _body(boundary, [
        (b'content-disposition: form-data; name="params"', b"{}"),
        (b"Content-Disposition: form-data; name=image;\r\n filename*=UTF-8''na%C3%AFve%20map.nii.gz", b"\x01\x02"),
        (b"Content-Disposition: form-data; name=\"quoted \\\"name\\\"; x\"", b"v"),
        (b"Content-Disposition: form-data; name=\"empty\"", b""),
    ])
    content_type = 'multipart/form-data; charset=utf-8; boundary="weird boundary with=chars\'()+_,-./:?"'
    parts = multipart.parse_multipart(body, content_type)
    assert [p.name for p in parts] == ["params", "image", 'quoted "name"; x', "empty"]
    assert parts[1].filename == "naïve map.nii.gz" and parts[1].content == b"\x01\x02"
    assert parts[3].content == b""
    assert multipart.parse_header_params('form-data; name="a;b"; filename="c.nii.gz"') == (
        "form-data", {"name": "a;b", "filename": "c.nii.gz"})


@pytest.mark.parametrize("body, content_type, message", [
    (b"--b\r\n\r\nx\r\n--b--", "application/json", "expected a multipart"),
    (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data", "boundary"),
    (b"no boundary in here", "multipart/form-data; boundary=b", "holds no part"),
    (b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nhalf a file", "multipart/form-data; boundary=b",
     "truncated"),
    (b"--b\r\nnot a header line\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", "bad header"),
])
def test_multipart_errors_are_clear(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(multipart.MultipartError, match=message) as info:
        multipart.parse_multipart(body, content_type)
    assert isinstance(info.value, MalformedAnswerError)
    assert_clear_message(info.value)


# ----------------------------------------------------------------------------- upload
@pytest.mark.parametrize("direction_name", ["oblique", "oblique_flipped", "ras_aligned"])
def test_upload_then_infer_by_id(client: InsightClient, tmp_path: Path, direction_name: str) -> None:
    """A new volume is uploaded, analysed by id, and its heatmap lies exactly on it."""
    image = make_volume(direction=DIRECTIONS[direction_name], origin=(31.5, -12.25, 80.0), seed=5)
    path = write_image(image, tmp_path / "ct.nii.gz")
    image_id = unique_id(f"slicer_{direction_name}")
    assert not client.has_image(image_id)
    assert client.upload_image(path, image_id, info={"source": "test"}) == image_id
    assert client.has_image(image_id) and image_id in client.list_images()
    assert client.image_info(image_id)["source"] == "test"

    result = client.infer(image_id)
    assert result.image_id == image_id and 0.0 <= result.pe_probability <= 1.0
    heatmap_geometry = result.heatmap_geometry()
    assert heatmap_geometry.size_ijk == image.GetSize()
    assert_maps_like_itk(heatmap_geometry.ijk_to_ras, image)
    assert heatmap_geometry.same_grid(geometry.nifti_geometry(path.read_bytes()), atol_mm=GEOMETRY_TOLERANCE_MM)

    data, name = client.download_image(image_id)
    assert name.endswith(".nii.gz") and data == path.read_bytes()


def test_content_image_id_is_stable_and_safe() -> None:
    """Volumes without a server id are uploaded under <name>-<digest of voxels and geometry>."""
    voxels = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    matrix = np.diag([0.7, 0.7, 2.0, 1.0])
    first = content_image_id("CT chest (2024/01) ü", voxels, matrix)
    assert image_id_is_valid(first) and first.startswith("CT_chest_2024_01")
    assert content_image_id("CT chest (2024/01) ü", voxels.copy(), matrix.copy()) == first
    changed = voxels.copy()
    changed[0, 0, 0] += 1
    assert content_image_id("CT chest (2024/01) ü", changed, matrix) != first
    assert content_image_id("CT chest (2024/01) ü", voxels, geometry.flip_lps_ras_matrix(matrix)) != first
    assert image_id_is_valid(content_image_id("", voxels, matrix))
    assert "." not in content_image_id("scan.nii", voxels, matrix)


def test_upload_rejects_bad_input(client: InsightClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read"):
        client.upload_image(tmp_path / "missing.nii.gz", "some_id")
    with pytest.raises(InvalidInputError, match="not a volume file"):
        client.upload_image(b"data", "some_id", filename="notes.txt")
    with pytest.raises(InvalidInputError, match="needs a file name"):
        client.upload_image(b"data", "some_id")
    with pytest.raises(InvalidInputError, match="image id"):
        client.upload_image(b"data", "bad id with spaces", filename="x.nii.gz")


# ----------------------------------------------------------------------------- labels
def test_label_round_trip_with_provenance_and_versions(client: InsightClient, tmp_path: Path) -> None:
    """Save a label edited from the heatmap with its provenance, read it back equal voxel by voxel;
    save again: both versions are kept, listed with their provenance, and downloadable."""
    image = make_volume(direction=oblique_direction(25.0, flip_x=True), seed=11)
    image_id = unique_id("slicer_label")
    client.upload_image(write_image(image, tmp_path / "ct.nii.gz"), image_id)
    result = client.infer(image_id)
    values, heatmap_geometry = result.heatmap_volume()

    threshold = max(float(values.max()) * 0.5, 1e-3)
    mask = colormap.threshold_mask(values, threshold)
    mask[2:5, 3:9, 4:12] = 1 - mask[2:5, 3:9, 4:12]  # an edit: the annotator repainted a block
    digest_before_edit = labels.mask_digest(colormap.threshold_mask(values, threshold))
    method = labels.mask_method(mask, digest_before_edit)
    assert method == "edited"
    provenance = labels.LabelProvenance(annotator="Dr. Test", scan_label="PE", method=method, model=result.model,
                                        model_version=result.model_version, heatmap_threshold=threshold,
                                        uncertainty="distal branch unsure", client_id="slicer-test-1",
                                        image_id=image_id)
    labels.check_submission(provenance.scan_label, mask)
    label_bytes = nifti.write_nifti(mask, heatmap_geometry.ijk_to_ras)

    receipt = client.save_label(image_id, label_bytes, provenance)
    assert receipt.image_id == image_id and receipt.label_id and receipt.tag == labels.DEFAULT_LABEL_TAG
    assert receipt.version == 1
    assert receipt.provenance["saved_by"] == "Dr. Test" and receipt.provenance["method"] == "edited"
    assert receipt.provenance["model_version"] == result.model_version
    assert receipt.provenance["uncertainty"] == "distal branch unsure"
    assert receipt.provenance["client_id"] == "slicer-test-1"

    stored = client.download_label(receipt.label_id)
    read_back, header = nifti.read_nifti(stored)
    np.testing.assert_array_equal(read_back, mask)
    assert read_back.dtype == np.uint8
    # SimpleITK reads the same voxels on the CT's grid
    itk_label = read_image_bytes(stored)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk_label), mask)
    assert_maps_like_itk(geometry.nifti_geometry(header).ijk_to_ras, itk_label)
    assert_maps_like_itk(geometry.nifti_geometry(header).ijk_to_ras, image)

    info = client.label_info(receipt.label_id)
    again = labels.LabelProvenance.from_params(info)
    assert again.annotator == "Dr. Test" and again.scan_label == "pe" and again.method == "edited"
    assert again.model_version == result.model_version and again.heatmap_threshold == pytest.approx(threshold)
    assert info["schema"] == labels.PROVENANCE_SCHEMA and info["image_id"] == image_id

    # a second save (the annotator cleared the mask: manual, uncertain) keeps the first as version 1
    empty = np.zeros_like(mask)
    second = client.save_label(image_id, nifti.write_nifti(empty, heatmap_geometry.ijk_to_ras),
                               labels.LabelProvenance(annotator="Dr. Second", scan_label="Uncertain", method="manual"))
    assert second.version == 2 and second.provenance["method"] == "manual"
    np.testing.assert_array_equal(nifti.read_nifti(client.download_label(image_id))[0], empty)
    assert client.label_info(image_id)["scan_label"] == "uncertain"

    versions = client.label_versions(image_id)
    assert [v.version for v in versions] == [1, 2]
    assert [v.current for v in versions] == [False, True]
    assert [v.saved_by for v in versions] == ["Dr. Test", "Dr. Second"]
    assert [v.method for v in versions] == ["edited", "manual"]
    assert versions[0].model_version == result.model_version and versions[1].model_version is None
    assert versions[0].uncertainty == "distal branch unsure" and versions[0].client_id == "slicer-test-1"
    assert all(v.saved_at for v in versions)
    first_file = client.download_label_version(image_id, 1)
    np.testing.assert_array_equal(nifti.read_nifti(first_file)[0], mask)
    np.testing.assert_array_equal(nifti.read_nifti(client.download_label_version(image_id, 2))[0], empty)

    with pytest.raises(NotFoundError, match="no version 3") as info_3:
        client.download_label_version(image_id, 3)
    assert_clear_message(info_3.value)
    with pytest.raises(InvalidInputError, match="positive integer"):
        client.download_label_version(image_id, 0)


def test_label_versions_and_refusals_are_clear(client: InsightClient, tmp_path: Path) -> None:
    image_id = unique_id("slicer_versions")
    image = make_volume(seed=12)
    client.upload_image(write_image(image, tmp_path / "ct.nii.gz"), image_id)
    assert client.label_versions(image_id) == []
    with pytest.raises(NotFoundError, match="not found") as info:
        client.label_versions("no_such_image_here")
    assert_clear_message(info.value)
    # a label not on the image's grid: refused by the server with its reason (HTTP 422)
    wrong_grid = nifti.write_nifti(np.zeros((3, 4, 5), np.uint8), np.eye(4))
    with pytest.raises(RequestRejectedError) as info:
        client.save_label(image_id, wrong_grid, labels.LabelProvenance(annotator="a", scan_label="uncertain",
                                                                       method="manual"))
    assert info.value.status == 422 and "grid" in assert_clear_message(info.value)
    # a raw provenance record with a method the server does not know: refused with the reason
    on_grid = nifti.write_nifti(np.zeros(image.GetSize()[::-1], np.uint8), itk_geometry(image).ijk_to_ras)
    with pytest.raises(RequestRejectedError, match="method must be one of pseudo, edited, manual") as info:
        client.save_label(image_id, on_grid, {"annotator": "a", "method": "heatmap"})
    assert info.value.status == 422
    assert client.label_versions(image_id) == []  # nothing was stored by the refused saves


def test_label_provenance_rules() -> None:
    with pytest.raises(InvalidInputError, match="annotator"):
        labels.LabelProvenance(annotator="  ", scan_label="pe", method="manual")
    with pytest.raises(InvalidInputError, match="at most 200"):
        labels.LabelProvenance(annotator="a" * 201, scan_label="pe", method="manual")
    with pytest.raises(InvalidInputError, match="unknown scan label"):
        labels.LabelProvenance(annotator="a", scan_label="maybe", method="manual")
    for method in ("edited", "pseudo"):
        with pytest.raises(InvalidInputError, match="needs the version"):
            labels.LabelProvenance(annotator="a", scan_label="pe", method=method)
    for method in ("guessed", "heatmap", "empty"):
        with pytest.raises(InvalidInputError, match="mask method"):
            labels.LabelProvenance(annotator="a", scan_label="pe", method=method)
    with pytest.raises(InvalidInputError, match="uncertainty note"):
        labels.LabelProvenance(annotator="a", scan_label="pe", method="manual", uncertainty="x" * 2001)
    assert [labels.parse_scan_label(v) for v in ("PE", "No PE", "no_pe", "Uncertain", "no-pe")] == [
        "pe", "no_pe", "no_pe", "uncertain", "no_pe"]
    record = labels.LabelProvenance(annotator="a", scan_label="uncertain", method="manual", uncertainty="  ",
                                    client_id=" ").to_params()
    assert record["scan_label"] == "uncertain" and record["created_utc"]
    assert "model_version" not in record and "uncertainty" not in record and "client_id" not in record

    assert [labels.weak_label_value(v) for v in ("PE", "No PE", "uncertain")] == [1, 0, "uncertain"]
    assert [labels.scan_label_from_weak(v) for v in (1, 0, "1", "0", "uncertain", None, True)] == [
        "pe", "no_pe", "pe", "no_pe", "uncertain", None, "pe"]
    with pytest.raises(InvalidInputError, match="weak label value"):
        labels.scan_label_from_weak(2)

    mask = np.zeros((4, 5, 6), np.uint8)
    assert labels.mask_method(mask, None) == "manual"
    mask[1, 2, 3] = 1
    assert labels.mask_method(mask, None) == "manual"
    assert labels.mask_method(mask, labels.mask_digest(mask.astype(bool))) == "pseudo"
    assert labels.mask_method(np.zeros_like(mask), labels.mask_digest(mask)) == "edited"
    with pytest.raises(InvalidInputError, match="PE label needs a segmentation"):
        labels.check_submission("pe", np.zeros((2, 2, 2)))
    with pytest.raises(InvalidInputError, match="'No PE'"):
        labels.check_submission("no_pe", mask)
    labels.check_submission("uncertain", None)


# ----------------------------------------------------------------------------- weak (scan-level) labels
def test_weak_label_round_trip(client: InsightClient, server: MonaiLabelServer, tmp_path: Path) -> None:
    image_id = unique_id("slicer_weak")
    client.upload_image(write_image(make_volume(seed=13), tmp_path / "ct.nii.gz"), image_id)
    assert client.weak_label(image_id).scan_label is None

    label = client.set_weak_label(image_id, "PE", annotator="Dr. Weak", note="central clot")
    assert (label.image_id, label.scan_label, label.set_by, label.note, label.source) == (
        image_id, "pe", "Dr. Weak", "central clot", "rest")
    assert label.set_at
    read = client.weak_label(image_id)
    assert read == label
    raw = requests.get(server.url(f"/insight/weak-labels/{image_id}"), timeout=10).json()
    assert raw["pe"] == 1  # what pe_insight's trainer reads

    for shown, stored, value in (("No PE", "no_pe", 0), ("Uncertain", "uncertain", "uncertain")):
        assert client.set_weak_label(image_id, shown).scan_label == stored
        assert client.weak_label(image_id).scan_label == stored
        assert requests.get(server.url(f"/insight/weak-labels/{image_id}"), timeout=10).json()["pe"] == value
    assert client.clear_weak_label(image_id) is True
    assert client.weak_label(image_id).scan_label is None
    assert client.clear_weak_label(image_id) is False

    with pytest.raises(InvalidInputError, match="unknown scan label"):
        client.set_weak_label(image_id, "probably")
    with pytest.raises(NotFoundError, match="not found") as info:
        client.set_weak_label("no_such_image_here", "PE")
    assert_clear_message(info.value)


def test_error_5xx_from_the_real_server(client: InsightClient) -> None:
    """MONAI Label answers a bare HTTP 500 ("Internal Server Error") when asked to update the info
    of an image it does not have. (Saving a label for such an image is a clear 404 since the app
    replaced that route: checked here too.)"""
    with pytest.raises(ServerFailureError) as info:
        client.update_image_info("image_that_does_not_exist", {"scan_label": "pe"})
    assert info.value.status == 500
    message = assert_clear_message(info.value)
    assert "HTTP 500" in message and "info update of image 'image_that_does_not_exist'" in message
    assert "Internal Server Error" in info.value.detail
    with pytest.raises(NotFoundError, match="image 'image_that_does_not_exist' not found") as not_found:
        client.save_label("image_that_does_not_exist", nifti.write_nifti(np.zeros((2, 3, 4), np.uint8), np.eye(4)),
                          labels.LabelProvenance(annotator="a", scan_label="uncertain", method="manual"))
    assert_clear_message(not_found.value)


# ----------------------------------------------------------------------------- active learning
SLICER_CLIENTS = ("slicer-a", "slicer-b")


@pytest.fixture
def leased_clients(client: InsightClient) -> Iterator[tuple[str, ...]]:
    """Client ids for lease tests; their leases on the shared server are given back afterwards."""
    yield SLICER_CLIENTS
    for lease in client.leases():
        if lease.client_id in SLICER_CLIENTS:
            client.release_lease(lease.image_id, lease.client_id)


def test_next_sample_two_clients_get_different_images_and_give_back(client: InsightClient,
                                                                      leased_clients: tuple[str, ...]) -> None:
    first_client, second_client = leased_clients
    images = set(client.list_images())
    first = client.next_sample("random", client_id=first_client)
    second = client.next_sample("random", client_id=second_client)
    assert first is not None and second is not None
    assert first.image_id in images and second.image_id in images
    assert first.image_id != second.image_id, "an image handed to one annotator was handed to another"
    for sample, holder in ((first, first_client), (second, second_client)):
        assert sample.strategy == "random" and sample.lease is not None
        assert sample.lease.image_id == sample.image_id and sample.lease.client_id == holder
        assert sample.lease.seconds > 60 and sample.lease.strategy == "random"
    held = {lease.image_id: lease.client_id for lease in client.leases()}
    assert held[first.image_id] == first_client and held[second.image_id] == second_client

    # another client's id cannot give the image back; its holder can
    assert client.release_lease(first.image_id, client_id=second_client) is None
    assert first.image_id in {lease.image_id for lease in client.leases()}
    released = client.release_lease(first.image_id, client_id=first_client)
    assert released is not None and released.image_id == first.image_id and released.client_id == first_client
    assert first.image_id not in {lease.image_id for lease in client.leases()}
    assert client.release_lease(first.image_id, client_id=first_client) is None

    with pytest.raises(InvalidInputError, match="client id"):
        client.next_sample("random", client_id="bad id with spaces")


def test_next_sample_refusals_are_clear(client: InsightClient) -> None:
    offered = client.strategies()
    assert {"random", "uncertainty", "disagreement", "diversity"} <= set(offered)
    with pytest.raises(NotOfferedError, match="no active-learning strategy 'nonexistent'.*random") as info:
        client.next_sample("nonexistent", client_id="slicer-refused")
    assert_clear_message(info.value)
    # disagreement compares the heatmap with pe_segmentation, which this server has not trained: HTTP 409
    with pytest.raises(NotReadyError) as info:
        client.next_sample("disagreement", client_id="slicer-refused")
    assert info.value.status == 409
    message = assert_clear_message(info.value)
    assert "pe_segmentation" in message and "HTTP 409" in message
    assert "slicer-refused" not in {lease.client_id for lease in client.leases()}


# ----------------------------------------------------------------------------- the campaign server
@pytest.fixture(scope="module")
def campaign_server(campaign_server_start) -> MonaiLabelServer:
    """A server of its own for training (it changes the served model) with active learning switched
    off, serving six small phantoms (three with PE; their labels.csv is imported as weak labels); its
    segmentation checkpoint (``campaign_server.workdir.parent / "seg"``) does not exist until a test
    writes one. Started in the background when the module starts (see ``campaign_server_start``)."""
    thread, outcome = campaign_server_start
    thread.join(timeout=SERVER_START_TIMEOUT_S + 120)
    if "error" in outcome:
        raise outcome["error"]
    assert "server" in outcome, "the campaign server did not start in time"
    return outcome["server"]


@pytest.fixture(scope="module")
def campaign_seg_checkpoint(campaign_server_start) -> Path:
    """Where the campaign server looks for the pe_segmentation checkpoint."""
    return campaign_server_start[1]["seg_checkpoint"]


@pytest.fixture(scope="module")
def campaign_server_start(monailabel_server_factory, demo_model_path: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[threading.Thread, dict]]:
    """Generates the campaign phantoms and starts the campaign server in a thread, so both overlap
    with the tests on the standard server (the whole file stays fast on two cores). The thread is
    joined before the module ends, so the factory always stops the server."""
    folder = tmp_path_factory.mktemp("slicer_campaign")
    outcome: dict = {"seg_checkpoint": folder / "seg" / "pe_segmentation.pt"}

    def start() -> None:
        try:
            from insight.phantom import PhantomConfig, write_dataset

            write_dataset(folder / "studies", n=6, seed=7, config=PhantomConfig(shape_xyz=(64, 64, 32)),
                          progress=False)
            outcome["server"] = monailabel_server_factory(
                folder / "studies", demo_model_path,
                conf={"train_epochs": "1", "auto_scoring": "false", "model_watch_s": "0.5",
                      "seg_model_path": str(outcome["seg_checkpoint"])},
                env={"MONAI_LABEL_TASKS_STRATEGY": "false"})
        except BaseException as err:  # pytest.fail raises a BaseException: re-raised in the test
            outcome["error"] = err

    thread = threading.Thread(target=start, name="campaign server start", daemon=True)
    thread.start()
    yield thread, outcome
    thread.join()


@pytest.fixture(scope="module")
def campaign_client(campaign_server: MonaiLabelServer) -> InsightClient:
    return InsightClient(campaign_server.base_url)


def test_next_sample_when_server_offers_no_strategy(campaign_client: InsightClient) -> None:
    """A real server started with active learning switched off: the client says so clearly."""
    assert campaign_client.strategies() == []
    with pytest.raises(NotOfferedError, match="offers no active-learning strategy, so it cannot pick the next case") \
            as info:
        campaign_client.next_sample(client_id="slicer-a")
    assert_clear_message(info.value)


def test_segmentation_model_not_trained_then_label_volume(campaign_client: InsightClient, campaign_seg_checkpoint: Path,
                                                          campaign_server: MonaiLabelServer) -> None:
    """pe_segmentation without a checkpoint: a clear 'not trained' message (before and from the server);
    once a checkpoint exists: a uint8 label volume on the image's own voxel grid."""
    image_id = sorted(campaign_client.list_images())[0]
    model = campaign_client.model("pe_segmentation")
    assert not model.trained and model.status == "not_trained"
    with pytest.raises(NotReadyError, match="pe_segmentation model is not trained yet") as info:
        campaign_client.segment(image_id)
    assert_clear_message(info.value)
    # the server itself refuses the same way (HTTP 422 with its reason), as a direct request shows
    direct = requests.post(campaign_server.url("/infer/pe_segmentation"), params={"image": image_id}, timeout=60)
    assert direct.status_code == 422 and "not trained" in direct.json()["detail"]

    import torch

    from insight.segmentation import SegmentationConfig, SegNetworkConfig, build_network, save_segmentation_checkpoint

    torch.manual_seed(0)  # a small untrained UNet: its mask is arbitrary, its grid is what is checked
    config = SegmentationConfig(network=SegNetworkConfig(channels=(4, 8), num_res_units=0), patch_size_zyx=(32, 64, 64))
    save_segmentation_checkpoint(campaign_seg_checkpoint, build_network(config.network), config)
    assert campaign_client.model("pe_segmentation").trained

    result = campaign_client.segment(image_id)
    assert result.image_id == image_id and result.model == "pe_segmentation" and result.model_version
    assert result.peak_probability is not None and 0.0 <= result.peak_probability <= 1.0
    mask, mask_geometry = result.label_volume()
    ct = sitk.ReadImage(str(campaign_server.studies_dir / f"{image_id}.nii.gz"))
    assert mask.dtype == np.uint8 and mask.shape == ct.GetSize()[::-1] and set(np.unique(mask)) <= {0, 1}
    assert_maps_like_itk(mask_geometry.ijk_to_ras, ct)
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(read_image_bytes(result.label)) > 0)
    assert campaign_client.model("pe_segmentation").model_version == result.model_version
    json_only = campaign_client.segment(image_id, with_label=False)
    assert json_only.label is None and json_only.model_version == result.model_version
    with pytest.raises(MalformedAnswerError, match="no label volume"):
        json_only.label_volume()


def test_train_start_and_poll_until_done(campaign_client: InsightClient, campaign_server: MonaiLabelServer) -> None:
    """A one-epoch pe_insight training started and followed by the client: progress rises to 1, the
    stats name the new model version, and the server then serves it."""
    images = sorted(campaign_client.list_images())
    before = campaign_client.model("pe_insight").model_version
    idle = campaign_client.train_status("pe_insight")
    assert idle.state == "idle" and not idle.running and "no training of pe_insight" in idle.message
    assert campaign_client.info().trainers["pe_insight"]["config"]["epochs"] == 1
    # a scan-level label set through the client changes what trains: this scan is left out
    assert campaign_client.set_weak_label(images[0], "uncertain", annotator="Dr. Train").scan_label == "uncertain"

    started = campaign_client.train_start("pe_insight", {"epochs": 1})
    assert started.state in ("submitted", "running") and started.task_id and started.epochs == 1
    states, progress = [started.state], [started.progress]
    refused_while_running = False
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    status = started
    while time.monotonic() < deadline:
        status = campaign_client.train_status("pe_insight")
        states.append(status.state)
        progress.append(status.progress)
        assert status.message.startswith("training pe_insight"), status.message
        if status.state == "running" and not refused_while_running:
            with pytest.raises(NotReadyError, match="already running") as info:
                campaign_client.train_start("pe_insight", {"epochs": 1})
            assert info.value.status == 429 and assert_clear_message(info.value)
            refused_while_running = True
        if status.finished:
            break
        time.sleep(0.5)  # each poll asks /train/ and /info
    assert status.state == "done", f"training did not finish: {status}\n{campaign_server.log_tail(40)}"
    assert "running" in states and refused_while_running
    numbers = [p for p in progress if p is not None]
    assert numbers == sorted(numbers) and numbers[-1] == 1.0 and all(0.0 <= p <= 1.0 for p in numbers)
    assert status.task_id == started.task_id
    assert status.trained_model_version and status.trained_model_version != before
    assert status.stats["epochs"] == 1 and status.stats["left_out"] == 1
    assert status.stats["train_images"] + status.stats["val_images"] == len(images) - 1
    assert status.trained_model_version in status.message

    deadline = time.monotonic() + 60
    served = before
    while time.monotonic() < deadline and served != status.trained_model_version:
        served = campaign_client.model("pe_insight").model_version
        time.sleep(0.3)
    assert served == status.trained_model_version, "the new weights are not served"
    assert campaign_client.infer(images[1], with_heatmap=False).model_version == served
    campaign_client.train_stop("pe_insight")  # nothing running: a no-op, not an error
    assert campaign_client.train_status("pe_insight").state == "done"


def test_training_refusals_are_clear(client: InsightClient, server: MonaiLabelServer) -> None:
    info = client.info()
    assert {"pe_insight", "pe_segmentation"} <= set(info.trainers)
    status = client.train_status("no_such_model")
    assert status.state == "not_offered" and not status.running and status.progress is None
    assert "offers no training for model 'no_such_model'" in status.message
    with pytest.raises(NotOfferedError, match="offers no training for model 'no_such_model'.*pe_insight") as err:
        client.train_start("no_such_model")
    assert_clear_message(err.value)
    with pytest.raises(NotOfferedError, match="offers no training"):
        client.train_stop("no_such_model")
    # a request the trainer cannot use: the server's reason, before any process starts
    with pytest.raises(RequestRejectedError, match="epochs must be an integer") as err:
        client.train_start("pe_insight", {"epochs": 0})
    assert err.value.status == 422 and assert_clear_message(err.value)
    assert requests.get(server.url("/train/"), timeout=10).status_code == 404


def test_train_status_progress_from_task_log() -> None:
    """Progress and messages from MONAI Label task records (as GET /train/ answers them)."""
    task = {"id": "t1", "status": "RUNNING", "request": {"model": "pe_insight", "epochs": 4}, "details": [
        "[2025-01-01 10:00:00] [INFO] (insight.training.trainer) - epoch 1/4 train_loss=0.7 val_auroc=0.5",
        "[2025-01-01 10:00:05] [INFO] (insight.training.trainer) - epoch 2: 3/6 scans, loss 0.6"]}
    status = TrainStatus.from_task("pe_insight", task)
    assert status.running and status.epochs == 4 and status.epoch == pytest.approx(1.5)
    assert status.progress == pytest.approx(1.5 / 4) and status.message == "training pe_insight: epoch 2 of 4"
    task["details"].append("epoch 2/4 train_loss=0.5")
    assert TrainStatus.from_task("pe_insight", task).progress == pytest.approx(0.5)
    no_log = TrainStatus.from_task("pe_insight", {"status": "RUNNING", "request": {"model": "pe_insight"}},
                                   default_epochs=10)
    assert no_log.epochs == 10 and no_log.progress == 0.0
    done = TrainStatus.from_task("pe_insight", {**task, "status": "DONE"},
                                 stats={"model_version": "v2", "epochs": 4, "val_auroc": 0.75, "seconds": 12})
    assert done.progress == 1.0 and done.message == "training pe_insight done: model v2, 4 epoch(s), " \
                                                    "val AUROC 0.750, 12 s"
    stalled = TrainStatus.from_task("pe_insight", {**task, "status": "DONE"},
                                    stats={"model_version": "v3", "epochs": 4, "warning": "same answer for every scan"})
    assert stalled.message == "training pe_insight done: model v3, 4 epoch(s). Warning: same answer for every scan"
    failed = TrainStatus.from_task("pe_insight", {**task, "status": "ERROR"},
                                   stats={"last_error": {"error": "no PE scans"}})
    assert failed.progress is None and failed.message == "training pe_insight failed: no PE scans"
    busy = TrainStatus.without_task("pe_insight", None, {"status": "RUNNING", "request": {"model": "pe_segmentation"}})
    assert busy.state == "busy" and not busy.running and "training pe_segmentation" in busy.message
    with pytest.raises(MalformedAnswerError, match="training status"):
        TrainStatus.from_task("pe_insight", {"status": "WEIRD"})


# ----------------------------------------------------------------------------- errors
def test_error_server_down() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = InsightClient(f"http://127.0.0.1:{port}")
    with pytest.raises(ServerUnreachableError) as info:
        client.info()
    message = assert_clear_message(info.value)
    assert f"127.0.0.1:{port}" in message and "is it running" in message


def test_error_4xx_with_detail(client: InsightClient, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        client.infer("no_such_image_here")
    assert info.value.status == 404
    assert "not found in the datastore" in info.value.detail
    assert "not found in the datastore" in assert_clear_message(info.value)

    with pytest.raises(NotFoundError, match="no infer model 'nope'"):
        client.infer(PE_STUDY, model="nope")

    corrupt_id = unique_id("slicer_corrupt")
    client.upload_image(b"this is not a volume", corrupt_id, filename="corrupt.nii.gz")
    with pytest.raises(RequestRejectedError) as info:
        client.infer(corrupt_id)
    assert info.value.status == 422 and "cannot read image" in info.value.detail
    assert "HTTP 422" in assert_clear_message(info.value)


def test_error_invalid_url() -> None:
    for url in ("", "127.0.0.1:8000", "ftp://host/"):
        with pytest.raises(InvalidInputError, match="not an http"):
            InsightClient(url)


class StubServer:
    """A raw TCP server on loopback answering every connection with ``reply(request_bytes)``
    (``None``: accept and never answer)."""

    def __init__(self, reply: Callable[[bytes], Optional[bytes]]) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                while length and len(body) < int(length.group(1)):
                    body += conn.recv(65536)
            except OSError:
                return
            self.requests.append(head)
            answer = self.reply(head)
            if answer is None:
                self._stop.wait(10)  # hold the connection open, answer nothing
                return
            conn.sendall(answer)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accept_thread.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def stub_factory() -> Iterator[Callable[[Callable[[bytes], Optional[bytes]]], StubServer]]:
    stubs: list[StubServer] = []

    def make(reply: Callable[[bytes], Optional[bytes]]) -> StubServer:
        stubs.append(StubServer(reply))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.close()


def http_answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def test_error_timeout(stub_factory) -> None:
    """The server accepts the connection and never answers (the real server cannot be made to)."""
    stub = stub_factory(lambda request: None)
    client = InsightClient(stub.url, timeouts=Timeouts(connect=2.0, read=SHORT_TIMEOUT_S))
    start = time.monotonic()
    with pytest.raises(ServerTimeoutError) as info:
        client.info()
    assert time.monotonic() - start < 5.0
    message = assert_clear_message(info.value)
    assert "did not answer within 0.5 s" in message and "server info" in message


@pytest.mark.parametrize("answer, message", [
    (http_answer("200 OK", b"<html><body>proxy login</body></html>", "text/html"), "not JSON"),
    (http_answer("200 OK", b'{"hello": "world"}'), "is this a MONAI Label server"),
    (http_answer("200 OK", b"[1, 2, 3]"), "not a JSON object"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not HTTP"),
])
def test_error_malformed_answer(stub_factory, answer: bytes, message: str) -> None:
    stub = stub_factory(lambda request: answer)
    with pytest.raises(MalformedAnswerError, match=message) as info:
        InsightClient(stub.url, timeouts=Timeouts(read=5.0)).info()
    assert_clear_message(info.value)


def test_error_malformed_infer_answers(stub_factory) -> None:
    answers = {
        "truncated": http_answer("200 OK", b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n{"pe',
                                 "multipart/form-data; boundary=b"),
        "params not json": http_answer("200 OK", b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
                                       b"nope\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        "no probability": http_answer("200 OK", b'{"model_version": "x"}'),
        "bad probability": http_answer("200 OK", b'{"pe_probability": 7, "model_version": "x"}'),
        "bad findings": http_answer("200 OK", b'{"pe_probability": 0.5, "model_version": "x", "findings": [{}]}'),
        "plain text": http_answer("200 OK", b"ok", "text/plain"),
    }
    expected = {"truncated": "truncated", "params not json": "not JSON", "no probability": "pe_probability",
                "bad probability": "not in \\[0, 1\\]", "bad findings": "finding 1", "plain text": "neither JSON"}
    for name, answer in answers.items():
        stub = stub_factory(lambda request, answer=answer: answer)
        with pytest.raises(MalformedAnswerError, match=expected[name]) as info:
            InsightClient(stub.url, timeouts=Timeouts(read=5.0)).infer("some_image")
        assert_clear_message(info.value)


def test_error_5xx_traceback_is_reduced_and_auth_errors(stub_factory) -> None:
    traceback = (b"Traceback (most recent call last):\n  File \"/srv/app.py\", line 3, in run\n    boom()\n"
                 b"RuntimeError: CUDA out of memory\n")
    stub = stub_factory(lambda request: http_answer("500 Internal Server Error", traceback, "text/plain"))
    with pytest.raises(ServerFailureError) as info:
        InsightClient(stub.url).info()
    message = assert_clear_message(info.value)
    assert "RuntimeError: CUDA out of memory" in message and "app.py" not in message and "HTTP 500" in message

    stub = stub_factory(lambda request: http_answer("401 Unauthorized", b'{"detail": "Not authenticated"}'))
    client = InsightClient(stub.url, token="secret-token")
    with pytest.raises(AuthenticationError, match="Not authenticated.*token"):
        client.info()
    assert b"authorization: bearer secret-token" in stub.requests[-1].lower()

    stub = stub_factory(lambda request: http_answer(
        "422 Unprocessable Entity", b'{"detail": [{"loc": ["query", "image"], "msg": "field required"}]}'))
    with pytest.raises(RequestRejectedError, match="query.image: field required"):
        InsightClient(stub.url).info()


def test_token_accepted_by_open_server(server: MonaiLabelServer) -> None:
    assert "pe_insight" in InsightClient(server.base_url, token="any").info().models


# ----------------------------------------------------------------------------- geometry (offline)
@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_nifti_geometry_matches_itk(tmp_path: Path, name: str) -> None:
    image = make_volume(size_xyz=(9, 7, 5), spacing=(0.7, 1.3, 2.5), origin=(-101.5, 33.25, 7.0),
                        direction=DIRECTIONS[name], seed=1)
    path = write_image(image, tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    read_back = sitk.ReadImage(str(path))
    lib_geometry = geometry.nifti_geometry(data)
    assert lib_geometry.size_ijk == image.GetSize()
    assert_maps_like_itk(lib_geometry.ijk_to_ras, read_back)
    np.testing.assert_allclose(lib_geometry.origin_lps, read_back.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(lib_geometry.spacing, read_back.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(lib_geometry.direction_lps.ravel(), read_back.GetDirection(), atol=1e-5)
    values, _ = nifti.read_nifti(data)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(read_back))


@pytest.mark.parametrize("name", ["oblique", "oblique_flipped", "left_handed"])
def test_nifti_qform_only_matches_itk(tmp_path: Path, name: str) -> None:
    """With the sform switched off (sform_code 0) the qform alone places the volume, as in ITK."""
    image = make_volume(size_xyz=(8, 6, 5), direction=DIRECTIONS[name], seed=2)
    raw = bytearray(zlib.decompress(write_image(image, tmp_path / "a.nii.gz").read_bytes(), 16 + zlib.MAX_WBITS))
    struct.pack_into("<h", raw, 254, 0)  # sform_code = 0 (little-endian header written by SimpleITK)
    struct.pack_into("<12f", raw, 280, *([0.0] * 12))
    qform_only = tmp_path / "qform_only.nii"
    qform_only.write_bytes(bytes(raw))
    header = nifti.parse_nifti_header(bytes(raw))
    assert header.sform_code == 0 and header.qform_code > 0
    assert_maps_like_itk(geometry.nifti_geometry(header).ijk_to_ras, sitk.ReadImage(str(qform_only)))


@pytest.mark.parametrize("qform_code, sform_code", [(1, 1), (1, 2), (2, 1), (1, 4), (0, 1), (1, 0), (2, 2),
                                                     (0, 2), (4, 1), (3, 3)])
def test_nifti_sform_or_qform_chosen_like_itk(tmp_path: Path, qform_code: int, sform_code: int) -> None:
    """When sform and qform disagree (sform shifted 5 mm), the Lib picks the one ITK (so Slicer) uses."""
    image = make_volume(size_xyz=(8, 6, 5), direction=DIRECTIONS["oblique_flipped"], seed=4)
    raw = bytearray(zlib.decompress(write_image(image, tmp_path / "a.nii.gz").read_bytes(), 16 + zlib.MAX_WBITS))
    srow = np.array(struct.unpack_from("<12f", raw, 280)).reshape(3, 4)
    srow[:, 3] += 5.0
    struct.pack_into("<12f", raw, 280, *srow.ravel())
    struct.pack_into("<2h", raw, 252, qform_code, sform_code)
    path = tmp_path / "disagreeing.nii"
    path.write_bytes(bytes(raw))
    assert_maps_like_itk(geometry.nifti_geometry(bytes(raw)).ijk_to_ras, sitk.ReadImage(str(path)))


@pytest.mark.parametrize("name", ["identity", "oblique_flipped", "permuted"])
def test_nrrd_geometry_matches_itk(tmp_path: Path, name: str) -> None:
    image = make_volume(size_xyz=(6, 5, 4), direction=DIRECTIONS[name], seed=3)
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    lib_geometry = geometry.nrrd_geometry(path.read_bytes())
    assert lib_geometry.size_ijk == image.GetSize()
    assert_maps_like_itk(lib_geometry.ijk_to_ras, sitk.ReadImage(str(path)))
    ras_header = ("NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 2 3 4\n"
                  "space directions: (0,0,2) (1.5,0,0) (0,-1,0)\nspace origin: (10,20,30)\n\n")
    ras = geometry.nrrd_geometry(ras_header)
    np.testing.assert_allclose(ras.ijk_to_ras_points([1, 1, 1]), [11.5, 19.0, 32.0])
    np.testing.assert_allclose(ras.ijk_to_lps[:3, 3], [-10.0, -20.0, 30.0])
    with pytest.raises(MalformedAnswerError, match="space 'scanner-xyz'"):
        geometry.nrrd_geometry(ras_header.replace("right-anterior-superior", "scanner-xyz"))


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_write_nifti_read_by_itk(tmp_path: Path, name: str, dtype) -> None:
    """The Lib's writer (labels, exports) places voxels exactly where ITK (and so Slicer) reads them."""
    reference = make_volume(size_xyz=(7, 6, 5), spacing=(0.8, 0.9, 3.0), origin=(5.0, -7.5, 120.0),
                            direction=DIRECTIONS[name])
    ijk_to_ras = itk_geometry(reference).ijk_to_ras
    values = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 7).astype(dtype)
    path = tmp_path / "written.nii.gz"
    path.write_bytes(nifti.write_nifti(values, ijk_to_ras))
    read_back = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_back), values)
    assert_maps_like_itk(ijk_to_ras, read_back)
    again, header = nifti.read_nifti(path.read_bytes())
    np.testing.assert_array_equal(again, values)
    assert geometry.matrices_close(header.qform_matrix(), ijk_to_ras, 1e-4)
    assert geometry.matrices_close(header.sform_matrix(), ijk_to_ras, 1e-4)


def test_lps_ras_conversions() -> None:
    assert geometry.lps_to_ras((1.0, -2.0, 3.0)) == (-1.0, 2.0, 3.0)
    assert geometry.ras_to_lps(geometry.lps_to_ras((4.0, 5.0, 6.0))) == (4.0, 5.0, 6.0)
    matrix = np.arange(16.0).reshape(4, 4)
    matrix[3] = [0, 0, 0, 1]
    np.testing.assert_array_equal(geometry.flip_lps_ras_matrix(geometry.flip_lps_ras_matrix(matrix)), matrix)
    g = geometry.geometry_from_itk((2, 2, 2), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), RAS_ALIGNED)
    np.testing.assert_allclose(g.ijk_to_ras, np.diag([1.0, 2.0, 3.0, 1.0]) + np.array(
        [[0, 0, 0, -10], [0, 0, 0, -20], [0, 0, 0, 30], [0, 0, 0, 0]]))
    np.testing.assert_allclose(g.ras_to_ijk_points(g.ijk_to_ras_points([[1, 0, 1], [0, 1, 0]])), [[1, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("data, message", [
    (b"short", "not a NIfTI file"),
    (b"\x1f\x8b\x08broken gzip", "broken gzip"),
    (struct.pack("<i", 540) + bytes(600), "NIfTI-2"),
    (struct.pack("<i", 348) + bytes(340) + b"xxxx", "magic"),
])
def test_nifti_errors_are_clear(data: bytes, message: str) -> None:
    with pytest.raises(nifti.NiftiError, match=message) as info:
        nifti.read_nifti(data)
    assert isinstance(info.value, MalformedAnswerError)


# ----------------------------------------------------------------------------- colormap
def _srgb_lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L* of sRGB colours in [0, 1], shape [N, 3] -> [N]."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def test_colormap_is_perceptual_and_transparent_below_threshold() -> None:
    import matplotlib

    rgb = colormap.inferno_rgb()
    assert rgb.shape == (256, 3)
    reference = np.asarray(matplotlib.colormaps["inferno"](np.linspace(0, 1, 256)))[:, :3]
    np.testing.assert_allclose(rgb, reference, atol=0.5 / 255 + 1e-9)
    lightness = _srgb_lightness(rgb)
    assert np.all(np.diff(lightness) > 0), "lightness must rise monotonically"

    table = colormap.colormap_rgba(0.5)
    assert table.shape == (256, 4)
    index = colormap.threshold_index(0.5)
    assert index == 128 and index / 255 >= 0.5 > (index - 1) / 255
    assert np.all(table[:index, 3] == 0.0) and np.all(table[index:, 3] == 1.0)
    assert np.all(colormap.colormap_rgba(0.0)[:, 3] == 1.0)
    assert colormap.colormap_rgba(1.0)[:, 3].sum() == 1.0
    assert colormap.window_level((0.0, 1.0)) == (1.0, 0.5)


def test_threshold_and_opacity_helpers() -> None:
    values = np.array([[[0.1, 0.5, np.nan, 0.9]]], dtype=np.float32)
    np.testing.assert_array_equal(colormap.threshold_mask(values, 0.5), [[[0, 1, 0, 1]]])
    assert colormap.threshold_mask(values, 0.5).dtype == np.uint8
    for bad in (-0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(InvalidInputError):
            colormap.check_threshold(bad)
        with pytest.raises(InvalidInputError):
            colormap.check_opacity(bad)
    with pytest.raises(InvalidInputError, match="threshold of 0"):
        colormap.threshold_mask(values, 0.0)
    assert colormap.check_opacity("0.25") == 0.25


def test_findings_rows_from_hand_made_answer() -> None:
    rows = findings.parse_findings([
        {"label": 2, "peak_score": 0.6, "mean_score": 0.55, "volume_mm3": 120.0, "voxel_count": 10,
         "centroid_ijk": [1, 2, 3], "centroid_lps_mm": [10.0, -20.0, 30.0], "peak_ijk": [1, 2, 3]},
        {"label": 1, "peak_score": 0.9, "mean_score": 0.7, "volume_mm3": 64.5, "voxel_count": 5,
         "centroid_ijk": [4, 5, 6], "centroid_lps_mm": [-1.5, 2.5, -3.0], "peak_ijk": [4, 5, 6]},
    ])
    assert [row.rank for row in rows] == [1, 2]
    assert rows[0].centroid_ras == (1.5, -2.5, -3.0) and rows[1].centroid_ras == (-10.0, 20.0, 30.0)
    assert findings.table_cells(rows[0]) == ("1", "0.900", "64", "1.5, -2.5, -3.0")
    assert [row.rank for row in findings.visible_findings(rows, 0.7)] == [1]
    assert findings.parse_findings(None) == []
    with pytest.raises(MalformedAnswerError, match="not a list"):
        findings.parse_findings("oops")


# ----------------------------------------------------------------------------- the Slicer side, statically
def _python_sources() -> list[Path]:
    return [MODULE_FILE, *sorted(LIB_DIR.glob("*.py"))]


@pytest.mark.parametrize("path", _python_sources(), ids=lambda p: p.name)
def test_parses_under_python39_grammar(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def _imported_top_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_lib_imports_only_stdlib_requests_numpy(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imported_top_names(tree)
    forbidden = {"torch", "SimpleITK", "nibabel", "cgi", "slicer", "vtk", "qt", "ctk", "monai", "monailabel",
                 "insight", "matplotlib", "scipy", "PIL", "requests_toolbelt"}
    assert not imported & forbidden, f"{path.name} imports {sorted(imported & forbidden)}"
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert third_party <= {"requests", "numpy"}, f"{path.name} imports {sorted(third_party)}"
    for node in ast.walk(tree):  # no 3.10+ dataclass options
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dataclass":
            assert not {k.arg for k in node.keywords} & {"slots", "kw_only", "match_args"}


def test_module_file_structure_ui_and_cmake_agree() -> None:
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"SlicerInsight", "SlicerInsightWidget", "SlicerInsightLogic", "SlicerInsightTest"} <= set(classes)
    # heavy or Slicer-free imports are not done at module level beyond Slicer's own modules
    top_imports = _imported_top_names(ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import,
                                                                                               ast.ImportFrom))],
                                                 type_ignores=[]))
    assert top_imports <= {"__future__", "logging", "os", "sys", "slicer", "vtk", "qt", "ctk", "typing"}, top_imports
    # no GUI in the Logic: no qt/ctk widgets, no dialogs
    logic_source = ast.get_source_segment(source, classes["SlicerInsightLogic"])
    for gui in ("qt.", "ctk.", "slicer.util.errorDisplay", "slicer.util.infoDisplay", "delayDisplay",
                "slicer.util.confirm"):
        assert gui not in logic_source, f"the Logic uses GUI code: {gui}"
    # every widget the Widget uses exists in the .ui
    ui_file = MODULE_DIR / "Resources" / "UI" / "SlicerInsight.ui"
    ui_names = {element.get("name") for element in ElementTree.parse(ui_file).iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= ui_names, f"missing in the .ui: {sorted(used - ui_names)}"
    # CMake installs every Lib file and the resources, with generic tests and the unittest
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in LIB_DIR.glob("*.py"):
        assert f"{{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} not in SlicerInsight/CMakeLists.txt"
    for needed in ("slicerMacroBuildScriptedModule", "WITH_GENERIC_TESTS", "Resources/UI/${MODULE_NAME}.ui",
                   "Resources/Icons/${MODULE_NAME}.png", "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)"):
        assert needed in cmake, needed


def test_icon_is_a_128px_png() -> None:
    data = (MODULE_DIR / "Resources" / "Icons" / "SlicerInsight.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)
    assert len(data) < 40_000


def test_client_calls_leave_no_file_on_the_server(server: MonaiLabelServer) -> None:
    """After every call above (uploads, analyses, labels, refusals), the server's TMPDIR is empty."""
    leftovers = server.leftover_temp_files()
    assert not leftovers, f"files left in the server's TMPDIR: {[p.name for p in leftovers]}"
