"""Triage: a reading worklist ordered by PE probability and QA state, and the catalog of analysed studies.

- :mod:`.worklist`: prediction JSONs -> ordered :class:`Worklist` (suspected PE, QA failed, not
  analysed, routine); a study that failed QA or could not be read is listed with its state, never dropped.
- :mod:`.catalog`: :class:`StudyCatalog`, one prediction JSON and one case-index entry per study of a
  folder, re-analysing only what changed (the server's ``/insight/worklist`` and ``/insight/similar``).

CLI: ``insight triage``.
"""

from insight.triage.catalog import PREDICTIONS_DIR, RETRIEVAL_DIR, StudyCatalog, SyncReport
from insight.triage.worklist import (DEFAULT_FLAG_THRESHOLD, PRIORITY_ORDER, Worklist, WorklistEntry, build_worklist,
                                     entry_from_prediction, read_prediction_file, read_prediction_folder)

__all__ = ["PREDICTIONS_DIR", "RETRIEVAL_DIR", "StudyCatalog", "SyncReport", "DEFAULT_FLAG_THRESHOLD",
           "PRIORITY_ORDER", "Worklist", "WorklistEntry", "build_worklist", "entry_from_prediction",
           "read_prediction_file", "read_prediction_folder"]
