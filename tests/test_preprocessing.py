"""Model-grid preprocessing and the way back to the input grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from insight.config import PreprocessConfig
from insight.preprocessing.spatial import crop_to_body
from insight.preprocessing import prepare_volume, slice_stack, to_model_grid, to_reference_grid, window_hu
from tests.helpers import make_volume, oblique_direction


def test_window_maps_hu_linearly_to_unit_range():
    out = window_hu(np.array([-2000, -1000, -150, 700, 3000], dtype=np.int16), (-1000.0, 700.0))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        window_hu(np.zeros(3), (1.0, 1.0))


@pytest.mark.parametrize("context", [0, 1, 2])
def test_slice_stack_channels_are_neighbours(context):
    volume = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 2, 3)
    stack = slice_stack(volume, context)
    assert stack.shape == (5, 2 * context + 1, 2, 3)
    centre = stack[:, context, 0, 0]
    torch.testing.assert_close(centre, torch.arange(5, dtype=torch.float32))
    if context:
        assert float(stack[0, 0, 0, 0]) == 0.0  # edge slice repeated
        assert float(stack[2, context - 1, 0, 0]) == 1.0 and float(stack[2, context + 1, 0, 0]) == 3.0


@pytest.mark.parametrize("direction", [None, oblique_direction(30.0), oblique_direction(0.0, flip_x=True)])
def test_model_grid_has_target_spacing_and_same_extent(direction):
    image = make_volume(size_xyz=(80, 70, 30), spacing=(0.8, 0.8, 1.0), direction=direction)
    config = PreprocessConfig(target_spacing_xyz=(2.0, 2.0, 3.0), body_crop_hu=None)
    grid = to_model_grid(image, config)
    np.testing.assert_allclose(grid.GetSpacing(), (2.0, 2.0, 3.0))
    assert grid.GetSize() == (32, 28, 10)
    # the physical centre of the volume stays where it was
    def centre(img):
        return np.array(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    np.testing.assert_allclose(centre(grid), centre(image), atol=1e-3)


def test_orientation_is_normalised_to_lps():
    image = make_volume(direction=oblique_direction(0.0, flip_x=True))
    grid = to_model_grid(image, PreprocessConfig(target_spacing_xyz=image.GetSpacing()))
    np.testing.assert_allclose(grid.GetDirection(), np.eye(3).ravel(), atol=1e-9)


def test_back_to_reference_grid_is_exact_geometry_and_values():
    image = make_volume(direction=oblique_direction(15.0))
    prepared = prepare_volume(image, PreprocessConfig(target_spacing_xyz=(2.0, 2.0, 3.0)))
    assert prepared.windowed.shape == tuple(reversed(prepared.grid.GetSize()))
    assert 0.0 <= prepared.windowed.min() and prepared.windowed.max() <= 1.0
    back = to_reference_grid(prepared.grid, image, default_value=-1024)
    assert back.GetSize() == image.GetSize() and back.GetDirection() == image.GetDirection()
    assert back.GetSpacing() == image.GetSpacing() and back.GetOrigin() == image.GetOrigin()
    # a constant region survives the round trip
    arr = sitk.GetArrayViewFromImage(back)
    assert abs(float(np.median(arr[3:-3, 14:22, 16:24])) - 40.0) < 60.0


def test_body_crop_keeps_the_body_and_its_physical_position():
    image = make_volume(size_xyz=(40, 36, 12), spacing=(1.0, 1.0, 2.0), direction=oblique_direction(10.0))
    cropped = crop_to_body(image, threshold_hu=-500.0, margin_mm=2.0)
    # body box spans x 10..29, y 9..26 (see make_volume); 2 mm margin = 2 voxels
    assert cropped.GetSize() == (24, 22, 12)
    first = cropped.TransformIndexToPhysicalPoint((0, 0, 0))
    np.testing.assert_allclose(first, image.TransformIndexToPhysicalPoint((8, 7, 0)), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(cropped),
                                  sitk.GetArrayViewFromImage(image)[:, 7:29, 8:32])
    air = sitk.Image(image.GetSize(), sitk.sitkInt16) - 1000
    assert crop_to_body(air, -500.0, 2.0).GetSize() == air.GetSize()


def test_heatmap_outside_the_body_crop_is_zero_on_the_input_grid():
    image = make_volume(size_xyz=(60, 60, 10), spacing=(1.0, 1.0, 2.0))
    grid = to_model_grid(image, PreprocessConfig(target_spacing_xyz=(2.0, 2.0, 2.0), body_crop_margin_mm=0.0))
    ones = sitk.Image(grid.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(grid)
    back = sitk.GetArrayViewFromImage(to_reference_grid(ones, image))
    assert back[:, 30, 30] .min() == pytest.approx(1.0) and back[:, 2, 2].max() == 0.0


def _phantom_grid_and_clot(name: str, config: PreprocessConfig):
    from pathlib import Path
    from insight.io.image_io import read_image
    studies = Path(__file__).resolve().parents[1] / "sample-data" / "studies"
    prepared = prepare_volume(read_image(studies / f"{name}.nii.gz"), config)
    clot = sitk.ReadImage(str(studies / "truth" / f"{name}_clot.nii.gz"))
    clot = sitk.Resample(clot, prepared.grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return prepared, sitk.GetArrayFromImage(clot).astype(bool)


@pytest.mark.parametrize("name", ["phantom_s7_0004", "phantom_s7_0005"])
def test_chest_search_region_holds_every_clot_and_leaves_out_the_chest_wall(name):
    prepared, clot = _phantom_grid_and_clot(name, PreprocessConfig())
    region = prepared.region
    assert region.shape == prepared.windowed.shape and region.dtype == bool
    assert clot.any() and region[clot].all()
    # inside the body, and without most of the chest wall, back and spine of the middle slice
    from insight.preprocessing.search_region import body_mask
    hu = sitk.GetArrayFromImage(prepared.grid)
    body = body_mask(hu)
    assert not (region & ~body).any()
    z = region.shape[0] // 2
    assert 0.3 < region[z].sum() / body[z].sum() < 0.8
    assert 0.1 < region.mean() < 0.7


def test_vessel_search_region_is_smaller_and_keeps_most_clot():
    chest, clot = _phantom_grid_and_clot("phantom_s7_0004", PreprocessConfig())
    vessels, _ = _phantom_grid_and_clot("phantom_s7_0004", PreprocessConfig(search_region="vessels"))
    assert vessels.region.sum() < 0.7 * chest.region.sum()
    assert vessels.region[clot].mean() > 0.9


def test_filling_defect_region_keeps_the_clots_and_drops_lumen_and_lung():
    chest, clot = _phantom_grid_and_clot("phantom_s7_0004", PreprocessConfig())
    defects, _ = _phantom_grid_and_clot("phantom_s7_0004", PreprocessConfig(search_region="filling_defects"))
    hu = sitk.GetArrayFromImage(defects.grid)
    assert defects.region.sum() < 0.5 * chest.region.sum()  # measured: a third
    assert defects.region[clot].mean() > 0.9
    # it leaves out nearly all enhanced lumen (> 350 HU) and aerated lung (< -600 HU) of the chest
    lumen, lung = chest.region & (hu > 350), chest.region & (hu < -600)
    assert defects.region[lumen].mean() < 0.25 and defects.region[lung].mean() < 0.05  # measured: 0.18 (lumen edges)


def test_search_region_falls_back_to_the_body_without_lungs_and_none_means_everywhere():
    image = make_volume(size_xyz=(40, 40, 10), spacing=(2.5, 2.5, 3.0))  # a soft-tissue block, no air inside
    prepared = prepare_volume(image, PreprocessConfig())
    assert prepared.region.any()
    everywhere = prepare_volume(image, PreprocessConfig(search_region="none"))
    assert everywhere.region.all()
    with pytest.raises(ValueError, match="search_region"):
        PreprocessConfig(search_region="lungs")
