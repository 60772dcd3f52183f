"""Volume I/O and geometry round trips: NIfTI, NRRD, MetaImage and a real DICOM series."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from insight.errors import InputError
from insight.io import case_name, read_image, write_image
from tests.helpers import REAL_DICOM_SERIES, make_volume, oblique_direction


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-5) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("direction", [None, oblique_direction(25.0), oblique_direction(10.0, flip_x=True)])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix, direction):
    image = make_volume(direction=direction)
    path = write_image(image, tmp_path / f"case{suffix}")
    again = read_image(path)
    assert_same_geometry(image, again)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(again))
    assert [p.name for p in tmp_path.iterdir()] == [f"case{suffix}"]  # no temp file left behind


@pytest.mark.parametrize("name, expected", [("a/b/case_01.nii.gz", "case_01"), ("x.NRRD", "x"), ("dir/series_7", "series_7"),
                                            ("scan.v2.nii", "scan.v2")])
def test_case_name(name, expected):
    assert case_name(name) == expected


def test_real_dicom_series_reads_with_scanner_geometry():
    image = read_image(REAL_DICOM_SERIES)
    assert image.GetSize() == (512, 512, 8)
    np.testing.assert_allclose(image.GetSpacing(), (0.646484375, 0.646484375, 8.0), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    values = sitk.GetArrayViewFromImage(image)
    assert values.min() == -1024 and values.max() > 1000  # rescale applied: HU, air and bone present


def test_real_dicom_round_trip_to_nifti(tmp_path):
    image = read_image(REAL_DICOM_SERIES)
    again = read_image(write_image(image, tmp_path / "series.nii.gz"))
    assert_same_geometry(image, again)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(again))


def test_unreadable_inputs_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="corrupt.nii.gz: cannot read"):
        read_image(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(text)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(empty)


def test_two_d_and_vector_images_are_refused(tmp_path):
    flat = sitk.GetImageFromArray(np.zeros((10, 10), np.int16))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="3D volume"):
        read_image(tmp_path / "flat.nii.gz")
    rgb = sitk.GetImageFromArray(np.zeros((4, 10, 10, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="scalar"):
        read_image(tmp_path / "rgb.nrrd")
