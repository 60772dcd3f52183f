"""The ``vessel_filters`` encoder: fixed 3D features that tell a clot from the rim of an artery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import hessian_matrix, hessian_matrix_eigvals

from insight.config import ModelConfig
from insight.models import InsightModel
from insight.models.vessel_filters import VesselFilterEncoder, hessian_eigenvalues, symmetric_eigenvalues

#: Channel indices in ``fixed_features``: intensity, blur, 3 x 3 Hessian eigenvalues, then
#: (black top-hat, local max) per box radius.
_BLACK_TOPHATS = [11, 13, 15]


def _artery_volume(clot: bool) -> torch.Tensor:
    """A bright artery (radius 5 voxels) along z in lung-dark surroundings, optionally with a clot inside.

    [Z, 1, Y, X] slice stacks (one channel), PE-window units (0.9 = contrast, 0.43 = clot).
    """
    z, y, x = torch.meshgrid(torch.arange(24.0), torch.arange(40.0), torch.arange(40.0), indexing="ij")
    volume = torch.zeros(24, 40, 40)
    radial = (y - 20) ** 2 + (x - 20) ** 2
    volume[radial <= 25] = 0.9
    if clot:
        volume[(radial <= 6) & (z >= 9) & (z <= 14)] = 0.43
    return volume[:, None]


@pytest.mark.parametrize("in_ch, size, stride, expected_hw", [(3, (32, 48), 4, (8, 12)), (1, (30, 30), 8, (4, 4))])
def test_vessel_filter_encoder_shapes(in_ch, size, stride, expected_hw):
    encoder = VesselFilterEncoder(in_ch, out_channels=6, stride=stride)
    slices = torch.rand(10, in_ch, *size)
    assert encoder.fixed_features(slices).shape == (10, VesselFilterEncoder.N_FIXED, *size)
    assert encoder(slices).shape == (10, 6, *expected_hw)


def test_hessian_eigenvalues_match_scikit_image():
    """Same finite-difference Hessian of the Gaussian-blurred volume as skimage (away from the border)."""
    rng = np.random.default_rng(0)
    volume = rng.random((20, 24, 28)).astype(np.float32)
    ours = hessian_eigenvalues(torch.from_numpy(volume)[None, None], 1.6).numpy() / 1.6**2
    theirs = np.stack(hessian_matrix_eigvals(
        hessian_matrix(volume, sigma=1.6, order="rc", use_gaussian_derivatives=False, mode="nearest")))[::-1]
    inner = (slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=2e-3)


def test_a_clot_inside_the_artery_lights_the_black_tophat_but_the_artery_rim_does_not():
    encoder = VesselFilterEncoder(1, out_channels=4, stride=4)
    with_clot = encoder.fixed_features(_artery_volume(clot=True))
    tophat = with_clot[:, _BLACK_TOPHATS].amax(dim=1)  # [Z, Y, X]
    clot_value = float(tophat[12, 20, 20])
    rim_value = float(tophat[12, 20, 26])  # just outside the artery wall, lung side
    assert clot_value > 0.3
    assert rim_value < 0.2 * clot_value
    without = encoder.fixed_features(_artery_volume(clot=False))[:, _BLACK_TOPHATS].amax(dim=1)
    assert float(without.max()) < 0.1 * clot_value


def test_closed_form_eigenvalues_match_eigvalsh_including_repeated_ones():
    generator = torch.Generator().manual_seed(0)
    matrices = torch.randn(2000, 3, 3, generator=generator, dtype=torch.float64)
    matrices = matrices + matrices.transpose(1, 2)
    matrices[0] = torch.eye(3) * 2.0  # all three equal
    matrices[1] = torch.diag(torch.tensor([1.0, 1.0, -3.0], dtype=torch.float64))  # two equal
    matrices[2] = 0.0
    entries = [matrices[:, i, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
    ours = symmetric_eigenvalues(*entries).T
    np.testing.assert_allclose(ours.numpy(), torch.linalg.eigvalsh(matrices).numpy(), atol=1e-6)
    flat = torch.zeros(4)  # float32, exactly zero: a constant (clipped) region of the scan
    assert torch.isfinite(symmetric_eigenvalues(flat, flat, flat, flat, flat, flat)).all()


def test_separable_box_max_equals_the_box_max_filter():
    from scipy import ndimage

    from insight.models.vessel_filters import _box_max

    volume = np.random.default_rng(1).random((9, 12, 14)).astype(np.float32)
    ours = _box_max(torch.from_numpy(volume)[None, None], (3, 5, 7))[0, 0].numpy()
    np.testing.assert_array_equal(ours, ndimage.maximum_filter(volume, size=(3, 5, 7), mode="nearest"))


def test_fine_strides_are_for_fixed_feature_encoders_only():
    assert ModelConfig(encoder="vessel_filters", encoder_stride=2).encoder_stride == 2
    assert ModelConfig(encoder="filter_bank", encoder_stride=1).encoder_stride == 1
    with pytest.raises(ValueError, match="encoder_stride of small_cnn must be one of"):
        ModelConfig(encoder="small_cnn", encoder_stride=2)


def test_stride_one_heatmap_has_the_input_resolution():
    model = InsightModel(ModelConfig(encoder="vessel_filters", encoder_stride=1, encoder_channels=(4, 4),
                                     reduce_channels=4, head_widths=(4, 4, 4), context_depth=1), in_channels=1)
    out = model(torch.rand(5, 1, 20, 22))
    assert out.heatmap.shape[-2:] == (20, 22)


def test_cli_trains_vessel_filters_at_stride_2_and_the_predictor_maps_the_heatmap_onto_the_input(tmp_path):
    import SimpleITK as sitk

    from insight.cli import main as cli_main
    from insight.inference import InsightPredictor
    from insight.models.checkpoint import load_checkpoint
    from tests.test_training import TINY_FLAGS, make_weak_label_folder

    train_dir = make_weak_label_folder(tmp_path / "train", 4, 0)
    out = tmp_path / "run"
    assert cli_main(["train", "--train", str(train_dir), "--val", str(train_dir), "--out", str(out), "--epochs", "1",
                     "--encoder", "vessel_filters", "--encoder-stride", "2", *TINY_FLAGS]) == 0
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint.model_version.startswith("insight-vessel_filters-")
    assert checkpoint.config.model.encoder_stride == 2
    image = sitk.ReadImage(str(train_dir / "case_1.nii.gz"))
    result = InsightPredictor.from_checkpoint(out / "best.pt", device="cpu").predict_image(image, "case_1")
    assert result.heatmap.GetSize() == image.GetSize()
    assert result.heatmap.GetSpacing() == image.GetSpacing()
    values = sitk.GetArrayFromImage(result.heatmap)
    assert 0.0 <= values.min() and values.max() <= 1.0 and 0.0 <= result.pe_probability <= 1.0


def test_stride_1_precompute_stores_the_maps_once_and_forward_is_unchanged():
    """At stride 1 the average- and max-pooled maps are both the fixed maps: stored once, read twice."""
    encoder = VesselFilterEncoder(1, out_channels=6, stride=1).eval()
    slices = torch.rand(8, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    cached = encoder.precompute(slices)
    assert cached.shape == (8, VesselFilterEncoder.N_FIXED, 20, 24) == (8, encoder.precomputed_channels, 20, 24)
    fixed = encoder.fixed_features(slices)
    both_poolings = torch.cat([torch.nn.functional.avg_pool2d(fixed, 1), torch.nn.functional.max_pool2d(fixed, 1)], 1)
    with torch.no_grad():
        expected = encoder.mix(both_poolings)  # what the learned layer was trained to read
        assert torch.equal(encoder(cached, precomputed=True), expected)
        assert torch.equal(encoder(slices), expected)
    assert VesselFilterEncoder(1, out_channels=6, stride=2).precompute(slices).shape[1] == 2 * encoder.N_FIXED


@pytest.mark.parametrize("cache", [True, False])
def test_feature_cache_switch_decides_whether_augmentation_reaches_the_fixed_features(tmp_path, cache):
    """Cached: the trainer feeds pooled fixed features. Not cached: it feeds the augmented slice stacks."""
    from insight.config import InsightConfig, TrainConfig
    from insight.training import InsightTrainer
    from insight.training.dataset import PreparedCase

    generator = torch.Generator().manual_seed(0)
    cases = [PreparedCase(f"c{i}", torch.rand(6, 16, 16, generator=generator).half(), i % 2) for i in range(2)]
    config = InsightConfig(model=ModelConfig(encoder="vessel_filters", encoder_channels=(4, 4), reduce_channels=4,
                                             head_widths=(4, 4, 4), context_depth=1))
    trainer = InsightTrainer(config, TrainConfig(epochs=1, cache_fixed_features=cache, amp=False), tmp_path, "cpu")
    trainer.fit(cases, progress=False)
    assert (trainer._precomputed is not None) == cache
    inputs, _ = trainer._training_input(0, cases[0], torch.Generator().manual_seed(1))
    expected_channels = 2 * VesselFilterEncoder.N_FIXED if cache else config.preprocess.in_channels  # stride 4
    assert inputs.shape[1] == expected_channels
    if not cache:  # intensity augmentation reaches the encoder's input (flips alone would not change values)
        raw = cases[0].volume.float()
        centres = [trainer._training_input(0, cases[0], torch.Generator().manual_seed(k))[0][:, 1] for k in range(8)]
        assert any(not torch.allclose(c, raw) and not torch.allclose(c, raw.flip(-1)) for c in centres)


@pytest.mark.parametrize("n_slices", [1, 2])
def test_a_one_or_two_slice_volume_gets_features_not_an_error(n_slices):
    encoder = VesselFilterEncoder(3, out_channels=4, stride=4)
    out = encoder(torch.rand(n_slices, 3, 20, 20))
    assert out.shape == (n_slices, 4, 5, 5) and torch.isfinite(out).all()
