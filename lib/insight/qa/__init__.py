"""Quality assurance of a study: acquisition, not-a-CTPA screening, and heatmap plausibility.

Runs before inference (:func:`screen_study`) and after it (:func:`screen_heatmap`); the predictor puts
the merged :class:`QAReport` into the ``qa`` object of its JSON. A study failing QA is still scored:
the verdict travels with the findings, never instead of them.

Modules: :mod:`.flags` (QAFlag, QAReport), :mod:`.chest` (coarse body/lung masks on a ~2 mm grid),
:mod:`.acquisition` (slices, values, field of view, thickness), :mod:`.ctpa` (modality, contrast phase),
:mod:`.heatmap_qa` (heat outside lungs and vessels), :mod:`.dicom_meta` (header facts),
:mod:`.screening` (runs them all, never raising).
"""

from insight.qa.dicom_meta import SeriesMetadata, read_series_metadata
from insight.qa.flags import QAFlag, QAReport
from insight.qa.screening import StudyScreening, screen_heatmap, screen_study

__all__ = ["QAFlag", "QAReport", "SeriesMetadata", "read_series_metadata", "StudyScreening", "screen_study",
           "screen_heatmap"]
