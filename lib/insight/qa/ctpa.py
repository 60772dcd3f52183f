"""Is this a CT pulmonary angiogram? Header facts, and the contrast in the central pulmonary blood pool.

A CTPA is timed so that contrast fills the pulmonary arteries: the pulmonary trunk typically reads
250 HU or more, so an embolus (20-90 HU) stands out as a dark filling defect. A chest CT without
contrast (blood about 40 HU) or one timed for the veins or the aorta (pulmonary arteries about
100-200 HU) cannot show emboli reliably, and the model, trained on CTPA, has no business scoring it.

The contrast measurement (:func:`measure_central_blood_pool`), on the analysis grid of
:mod:`insight.qa.chest`:

1. the *central mediastinum*: body voxels between the right and the left lung on the same row, in the
   slices where the lungs are at least half their largest cross-section (the hilar and cardiac
   levels; this leaves out the neck, the lung apices and the upper abdomen);
2. minus everything behind 45 % of the body's front-to-back depth
   (:meth:`~insight.qa.chest.ChestAnatomy.in_front_of_spine`): the vertebral bodies, rib heads and
   descending aorta. The pulmonary trunk, the proximal right and left pulmonary arteries and the right
   ventricle all lie in front of that line; bone behind it reads like contrast (150-400 HU) on a plain
   CT and must not be taken for it;
3. the *blood pool value*: an in-plane 3x3 mean (noise), then the minimum within a ball of radius
   :data:`BLOOD_POOL_RADIUS_MM` (a grey erosion), whose maximum over the region is the HU that a whole
   12 mm ball of tissue reaches. The pulmonary trunk (25-30 mm wide), the main arteries and the heart
   chambers hold such a ball; small calcifications, contrast streaks and thin bone do not. The
   brightest such region is often the superior vena cava or the right heart, which carry the bolus on
   its way to the pulmonary arteries: the value says "the central blood pool is (not) enhanced", not
   "the trunk reads exactly this". An aortic CT angiogram (bright aorta) can therefore pass as a CTPA.

Measured here (``insight.qa.ctpa.measure_central_blood_pool``): 57-64 HU on all five real chest CTs
of the project's real-data folder (no contrast), 261-2281 HU on 28 phantoms (arterial contrast
250-450 HU; the highest values are dense contrast in the superior vena cava). Phantoms, not patients.

Codes raised here (``check = "ctpa"``): ``not_ctpa`` (fail; one flag listing every reason),
``low_enhancement`` (warn: enhanced, but below :data:`GOOD_ENHANCEMENT_HU`), ``body_part`` (warn).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from insight.qa.chest import ChestAnatomy, grey_erode_mm
from insight.qa.dicom_meta import SeriesMetadata
from insight.qa.flags import QAFlag, QAReport

__all__ = ["NOT_CTPA_BELOW_HU", "GOOD_ENHANCEMENT_HU", "BLOOD_POOL_RADIUS_MM", "BloodPoolMeasurement",
           "measure_central_blood_pool", "screen_ctpa"]

logger = logging.getLogger(__name__)

#: Central blood pool below this (HU): not a CTPA (no or venous-phase contrast).
NOT_CTPA_BELOW_HU = 200.0
#: Central blood pool below this (HU) but above :data:`NOT_CTPA_BELOW_HU`: enhanced, but weakly.
GOOD_ENHANCEMENT_HU = 250.0
#: Radius (mm) of the ball that must fit inside a structure for it to count as blood pool.
BLOOD_POOL_RADIUS_MM = 6.0
#: Slices whose lung cross-section is at least this fraction of the largest are "central".
CENTRAL_LUNG_AREA_FRACTION = 0.5
#: Less air-filled lung than this (mL) and the volume is not a chest CT.
MIN_LUNG_ML = 300.0
#: BodyPartExamined values that fit a CTPA (upper case; DICOM PS3.16 CID 4031 terms and common variants).
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "HEART", "CHESTABDOMEN", "CHEST_ABDOMEN",
                              "CHESTABDPELVIS", "CHEST_ABDOMEN_PELVIS", "TORSO", "TRUNK", "WHOLEBODY",
                              "WHOLE_BODY", "PULMONARY", "PULMONARYARTERY", "PULMONARY_ARTERY", "THORAXABDOMEN",
                              "CTPA", "ANGIO", "AORTA", "MEDIASTINUM"})


@dataclass(frozen=True)
class BloodPoolMeasurement:
    """The central blood-pool HU of one volume.

    Attributes:
        hu: the blood pool value (see the module docstring), or None when it could not be measured.
        position_lps_mm: where that value was found (LPS, mm), or None.
        n_slices: number of central slices searched.
        note: why there is no value (empty when there is one).
    """

    hu: float | None
    position_lps_mm: tuple[float, float, float] | None
    n_slices: int
    note: str = ""


def measure_central_blood_pool(anatomy: ChestAnatomy) -> BloodPoolMeasurement:
    """Brightest blood-pool-sized region of the central mediastinum, in front of the spine (HU)."""
    area = anatomy.lung_area_per_slice_mm2()
    if not area.size or area.max() <= 0:
        return BloodPoolMeasurement(None, None, 0, "no lungs found")
    central = area >= CENTRAL_LUNG_AREA_FRACTION * area.max()
    region = anatomy.mediastinum() & central[:, None, None]
    if not region.any():
        return BloodPoolMeasurement(None, None, int(central.sum()), "no mediastinum between the two lungs")
    _, ys, xs = (np.flatnonzero(region.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    spacing = anatomy.spacing_xyz

    region &= anatomy.in_front_of_spine()
    zs = np.flatnonzero(central & region.any(axis=(1, 2)))
    if not zs.size:
        return BloodPoolMeasurement(None, None, int(central.sum()), "nothing left in front of the spine")
    z0, z1 = zs[0], zs[-1] + 1
    hu = anatomy.hu[z0:z1, y0:y1, x0:x1]
    inside = region[z0:z1, y0:y1, x0:x1]
    smoothed = ndimage.uniform_filter(hu, size=(1, 3, 3))  # in-plane 3x3 mean: a third of the noise
    eroded = grey_erode_mm(np.where(inside, smoothed, -1024.0), BLOOD_POOL_RADIUS_MM, spacing)
    eroded = np.where(inside, eroded, -1024.0)
    k, j, i = np.unravel_index(int(np.argmax(eroded)), eroded.shape)
    point = anatomy.grid.TransformIndexToPhysicalPoint((int(i + x0), int(j + y0), int(k + z0)))
    return BloodPoolMeasurement(float(eroded[k, j, i]), tuple(float(v) for v in point), int(central.sum()))


def screen_ctpa(anatomy: ChestAnatomy | None, metadata: SeriesMetadata | None = None) -> QAReport:
    """The not-a-CTPA verdict (``not_ctpa``) and the contrast-phase warnings for one study.

    Args:
        anatomy: the study's chest anatomy (None when it could not be computed: then only headers count).
        metadata: DICOM header facts, when the study came from DICOM.
    """
    report = QAReport()
    reasons: list[str] = []
    if metadata is not None:
        if metadata.modality and metadata.modality.upper() != "CT":
            reasons.append(f"modality is {metadata.modality}, not CT")
        if any("LOCALIZER" in t.upper() for t in metadata.image_types):
            reasons.append("the series is a localizer (scout)")
        if metadata.body_part and metadata.body_part.replace(" ", "") not in CHEST_BODY_PARTS:
            report.flags.append(QAFlag("body_part", f"BodyPartExamined is {metadata.body_part!r}, not the chest",
                                       "warn", "ctpa", details={"body_part": metadata.body_part}))
        if metadata.contrast_agent:
            report.measurements["contrast_agent"] = metadata.contrast_agent

    blood_pool: BloodPoolMeasurement | None = None
    if anatomy is not None:
        lung_ml = anatomy.lung_volume_ml
        report.measurements["lung_volume_ml"] = lung_ml
        if lung_ml < MIN_LUNG_ML:
            reasons.append(f"only {lung_ml:.0f} mL of air-filled lung: not a chest CT")
        else:
            blood_pool = measure_central_blood_pool(anatomy)
            report.measurements["pulmonary_blood_pool_hu"] = blood_pool.hu
            report.measurements["pulmonary_blood_pool_lps_mm"] = blood_pool.position_lps_mm
            if blood_pool.hu is None:
                reasons.append(f"the central pulmonary blood pool could not be located ({blood_pool.note})")
            elif blood_pool.hu < NOT_CTPA_BELOW_HU:
                reasons.append(f"the central pulmonary blood pool reads {blood_pool.hu:.0f} HU, below "
                               f"{NOT_CTPA_BELOW_HU:.0f} HU: the pulmonary arteries are not contrast-enhanced "
                               "(no contrast, or a venous or late phase)")
            elif blood_pool.hu < GOOD_ENHANCEMENT_HU:
                report.flags.append(QAFlag(
                    "low_enhancement", f"the central pulmonary blood pool reads {blood_pool.hu:.0f} HU, below the "
                    f"{GOOD_ENHANCEMENT_HU:.0f} HU of a well-timed CTPA: small emboli may be missed", "warn", "ctpa",
                    details={"blood_pool_hu": blood_pool.hu, "good_hu": GOOD_ENHANCEMENT_HU}))

    if reasons:
        details = {"reasons": reasons, "threshold_hu": NOT_CTPA_BELOW_HU}
        if blood_pool is not None and blood_pool.hu is not None:
            details["blood_pool_hu"] = blood_pool.hu
        report.flags.insert(0, QAFlag("not_ctpa", "not a CT pulmonary angiogram: " + "; ".join(reasons), "fail",
                                      "ctpa", details=details))
    return report
