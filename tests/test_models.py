"""Shapes and behaviour of the INSIGHT network parts (table-driven)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from insight.config import ModelConfig
from insight.models import InsightLoss, InsightModel, MaxPool, SmoothMaxPool, otsu_threshold, zero_below_otsu
from insight.models.encoders import ResNetTrunkEncoder, SmallCNNEncoder
from insight.models.filter_bank import FilterBankEncoder
from insight.models.insight_head import ContextModule, DetectionModule

SMALL = dict(encoder_channels=(8, 16, 16), reduce_channels=16, head_widths=(16, 8, 8))


@pytest.mark.parametrize(
    "in_ch, size, stride, expected_hw",
    [(3, (64, 64), 4, (16, 16)), (1, (50, 70), 4, (13, 18)), (5, (64, 64), 8, (8, 8)), (3, (33, 31), 8, (5, 4))],
)
def test_small_cnn_encoder_shapes(in_ch, size, stride, expected_hw):
    enc = SmallCNNEncoder(in_ch, (8, 16, 32), stride)
    out = enc(torch.zeros(2, in_ch, *size))
    assert out.shape == (2, enc.out_channels, *expected_hw)
    assert enc.stride == stride


@pytest.mark.parametrize("name, stride", [("resnet18", 8), ("resnet18", 4), ("resnet34", 8)])
def test_resnet_trunk_shapes(name, stride):
    enc = ResNetTrunkEncoder(name, in_channels=3, stride=stride)
    out = enc(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 128, 64 // stride, 64 // stride)


def test_resnet_trunk_rebuilds_stem_for_other_channel_counts():
    enc = ResNetTrunkEncoder("resnet18", in_channels=5, stride=8)
    assert enc(torch.zeros(1, 5, 32, 32)).shape == (1, 128, 4, 4)


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_context_module_keeps_shape_and_sees_neighbour_slices(depth):
    torch.manual_seed(0)
    ctx = ContextModule(16, (16, 8, 8), num_classes=2, depth=depth).eval()
    x = torch.randn(7, 16, 6, 6)
    base = ctx(x)
    assert base.shape == (7, 2, 6, 6)
    changed = x.clone()
    changed[3] += 5.0  # perturb slice 3 only
    diff = (ctx(changed) - base).abs().amax(dim=(1, 2, 3))
    neighbours_changed = bool(diff[2] > 1e-6 and diff[4] > 1e-6)
    assert neighbours_changed == (depth > 1)


def test_detection_module_is_pointwise():
    det = DetectionModule(16, (16, 8, 8), num_classes=1).eval()
    x = torch.randn(2, 16, 5, 5)
    y = x.clone()
    y[:, :, 0, 0] += 3.0
    diff = (det(y) - det(x)).abs()[:, 0]
    assert diff[:, 0, 0].min() > 0 and diff[:, 1:, :].max() == 0 and diff[:, :, 1:].max() == 0


@pytest.mark.parametrize("use_context, pooling", [(True, "smoothmax"), (False, "smoothmax"), (True, "max")])
def test_insight_model_output(use_context, pooling):
    model = InsightModel(ModelConfig(**SMALL, use_context=use_context, pooling=pooling), in_channels=3)
    out = model(torch.rand(6, 3, 32, 40))
    assert out.probability.shape == (1,)
    assert out.heatmap.shape == out.detection_logits.shape == (6, 1, 8, 10)
    assert (out.context_logits is not None) == use_context
    assert 0.0 <= float(out.heatmap.min()) and float(out.heatmap.max()) <= 1.0
    assert 0.0 <= float(out.probability.detach()) <= 1.0


def test_heatmap_is_detection_times_one_minus_context():
    model = InsightModel(ModelConfig(**SMALL), in_channels=3).eval()
    out = model(torch.rand(4, 3, 16, 16))
    expected = torch.sigmoid(out.detection_logits) * (1 - torch.sigmoid(out.context_logits))
    torch.testing.assert_close(out.heatmap, expected)


def test_insight_model_trains_a_step():
    torch.manual_seed(0)
    model = InsightModel(ModelConfig(**SMALL), in_channels=3)
    loss_fn = InsightLoss(0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(4, 3, 16, 16)
    out = model(x)
    loss = loss_fn(out.probability, torch.ones(1), out.detection_logits)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()


def test_model_rejects_wrong_rank():
    model = InsightModel(ModelConfig(**SMALL), in_channels=3)
    with pytest.raises(ValueError, match="expected slices"):
        model(torch.rand(3, 16, 16))


def test_smoothmax_formula_and_limits():
    x = torch.tensor([0.1, 0.5, 0.9, 0.2]).view(4, 1, 1, 1)
    a = 8.0
    flat = x.flatten()
    expected = float((flat * torch.exp(a * flat)).sum() / torch.exp(a * flat).sum())
    assert math.isclose(float(SmoothMaxPool(a)(x)), expected, rel_tol=1e-6)
    assert math.isclose(float(SmoothMaxPool(1e-4)(x)), float(flat.mean()), rel_tol=1e-3)
    assert math.isclose(float(SmoothMaxPool(500.0)(x)), 0.9, rel_tol=1e-3)
    assert float(MaxPool()(x)) == pytest.approx(0.9)


def test_smoothmax_per_class_and_stable_for_large_alpha():
    heat = torch.zeros(3, 2, 4, 4)
    heat[1, 0, 2, 2] = 1.0
    pooled = SmoothMaxPool(1000.0)(heat)
    assert pooled.shape == (2,) and torch.isfinite(pooled).all()
    assert float(pooled[0]) > 0.99 and float(pooled[1]) == 0.0


def test_smoothmax_rejects_bad_alpha():
    with pytest.raises(ValueError):
        SmoothMaxPool(0.0)


def test_otsu_matches_scikit_image_on_bimodal_data():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.05, 5000), rng.normal(0.8, 0.05, 1000)]).clip(0, 1)
    ours = float(otsu_threshold(torch.tensor(values)))
    assert abs(ours - threshold_otsu(values)) < 2.0 / 256
    assert 0.35 < ours < 0.65


def test_zero_below_otsu_zeroes_background_per_class():
    heat = torch.full((2, 2, 4, 4), 0.1)
    heat[0, 0, 0, 0] = 0.9
    heat[1, 1, 3, 3] = 0.7
    out = zero_below_otsu(heat)
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.9) and float(out[1, 1, 3, 3]) == pytest.approx(0.7)
    assert int((out > 0).sum()) == 2


def test_loss_is_bce_plus_spectral_penalty():
    p, y = torch.tensor([0.8]), torch.tensor([1.0])
    logits = torch.full((2, 1, 2, 2), 3.0)
    loss = InsightLoss(0.01)(p, y, logits)
    assert float(loss) == pytest.approx(-math.log(0.8) + 0.005 * 9.0, rel=1e-5)
    assert float(InsightLoss(0.0)(p, y, logits)) == pytest.approx(-math.log(0.8), rel=1e-5)
    assert torch.isfinite(InsightLoss()(torch.tensor([1.0]), torch.tensor([0.0]), logits))


def test_loss_rejects_shape_mismatch_and_negative_lambda():
    with pytest.raises(ValueError):
        InsightLoss(-1.0)
    with pytest.raises(ValueError, match="shape"):
        InsightLoss()(torch.tensor([0.5, 0.5]), torch.tensor([1.0]), torch.zeros(1, 1, 1, 1))


@pytest.mark.parametrize("in_ch, size, stride, expected_hw", [(3, (64, 64), 4, (16, 16)), (1, (50, 70), 4, (13, 18)),
                                                              (5, (64, 64), 8, (8, 8))])
def test_filter_bank_encoder_shapes(in_ch, size, stride, expected_hw):
    enc = FilterBankEncoder(in_ch, out_channels=12, stride=stride)
    out = enc(torch.rand(2, in_ch, *size))
    assert out.shape == (2, 12, *expected_hw)


def test_filter_bank_black_tophat_marks_a_filling_defect_not_a_node_beside_the_vessel():
    """A dark spot inside a bright vessel lights the black top-hat; a dark blob beside it does not."""
    image = torch.zeros(1, 1, 48, 48)  # lung-dark background (PE window)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    vessel = ((yy - 24) ** 2 + (xx - 16) ** 2) <= 36  # enhanced artery, radius 6 px
    image[0, 0][vessel] = 0.9
    clot = ((yy - 24) ** 2 + (xx - 16) ** 2) <= 4
    image[0, 0][clot] = 0.45  # filling defect inside the artery
    node = ((yy - 24) ** 2 + (xx - 26) ** 2) <= 9  # soft-tissue node touching the artery from outside
    image[0, 0][node] = 0.45
    enc = FilterBankEncoder(1, out_channels=4, stride=4)
    fixed = enc.fixed_features(image)[0]
    tophat = fixed[2:5].amax(dim=0)  # the three black top-hats
    assert float(tophat[24, 16]) > 0.2
    assert float(tophat[24, 27]) < 0.5 * float(tophat[24, 16])


@pytest.mark.parametrize("encoder", ["filter_bank", "vessel_filters"])
def test_insight_model_on_a_fixed_feature_encoder_trains_a_step(encoder):
    model = InsightModel(ModelConfig(encoder=encoder, encoder_channels=(8, 8), reduce_channels=8,
                                     head_widths=(8, 8, 8), context_depth=1), in_channels=3)
    out = model(torch.rand(4, 3, 32, 32))
    InsightLoss()(out.probability, torch.ones(1), out.detection_logits).backward()
    assert model.encoder.mix[0].weight.grad is not None


# ------------------------------------------------------------------ search region, masked pooling, hard negatives
def test_pooling_ignores_locations_outside_the_mask():
    heat = torch.zeros(2, 1, 3, 3)
    heat[0, 0, 0, 0] = 0.9  # hot, but outside the mask
    heat[1, 0, 1, 1] = 0.4
    mask = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    mask[1] = True
    assert float(MaxPool()(heat, mask)) == pytest.approx(0.4)
    inside = heat[1:].reshape(-1)
    expected = float((inside * torch.softmax(8.0 * inside, 0)).sum())
    assert float(SmoothMaxPool(8.0)(heat, mask)) == pytest.approx(expected, rel=1e-6)
    # an empty mask pools everything rather than nothing
    assert float(MaxPool()(heat, torch.zeros_like(mask))) == pytest.approx(0.9)


def test_model_heatmap_is_zero_outside_the_search_region():
    torch.manual_seed(0)
    model = InsightModel(ModelConfig(**SMALL, context_depth=1), 3).eval()
    region = torch.zeros(4, 32, 32, dtype=torch.bool)
    region[:, 8:16, 8:16] = True  # input pixels 8..15 -> feature cells 2..3 at stride 4
    with torch.no_grad():
        out = model(torch.rand(4, 3, 32, 32), region=region)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:4, 2:4] = False
    assert float(out.heatmap[:, 0][:, outside].abs().max()) == 0.0
    assert float(out.heatmap[:, 0, 2:4, 2:4].min()) > 0.0
    assert float(out.probability) <= float(out.heatmap.max()) + 1e-6
    with pytest.raises(ValueError, match="region"):
        model(torch.rand(4, 3, 32, 32), region=region[:, :20])


def test_hard_negative_term_pushes_down_the_hottest_locations_of_negative_scans_only():
    heat = torch.full((1, 1, 10, 10), 0.1)
    heat[0, 0, 0, :8] = 0.5  # the 8 hottest locations (the term's minimum top-k)
    loss = InsightLoss(0.0, negative_weight=1.0, negative_topk_fraction=0.01)
    term = loss.hard_negative_term(heat, torch.tensor([0.0]))
    assert float(term) == pytest.approx(-math.log(0.5), rel=1e-5)
    assert float(loss.hard_negative_term(heat, torch.tensor([1.0]))) == 0.0
    p = torch.tensor([0.5])
    total = loss(p, torch.tensor([0.0]), torch.zeros(1, 1, 10, 10), heat)
    assert float(total) == pytest.approx(-math.log(0.5) * 2, rel=1e-4)
    with pytest.raises(ValueError, match="heatmap"):
        loss(p, torch.tensor([0.0]), torch.zeros(1, 1, 10, 10))


def test_loss_keeps_a_gradient_when_the_pool_saturates():
    p = torch.tensor([0.0], requires_grad=True)
    InsightLoss(0.0)(p, torch.tensor([1.0]), torch.zeros(1, 1, 1, 1)).backward()
    assert p.grad is not None and float(p.grad) < -1.0  # a clamp would give exactly 0 here


@pytest.mark.parametrize("radius", [1, 2, 4, 6])
def test_filter_bank_separable_dilation_equals_the_square_max_filter(radius):
    import torch.nn.functional as F
    from insight.models.filter_bank import _dilate
    x = torch.rand(3, 2, 23, 17)
    square = F.max_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)
    torch.testing.assert_close(_dilate(x, radius), square, rtol=0, atol=0)
