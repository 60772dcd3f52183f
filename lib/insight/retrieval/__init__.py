"""Similar-case retrieval: a persisted faiss index of case embeddings, updated as studies arrive.

- :mod:`.index`: :class:`CaseIndex`, a folder holding a faiss index file (exact inner-product search
  over unit-length embeddings, so a score is the cosine similarity, 1 for the same study) and a JSON
  sidecar of case ids, labels, sources and the model version; every save is atomic.
- :mod:`.labels`: scan-level labels from a ``labels.csv`` (columns ``image``, ``pe``).
- :mod:`.builder`: embed studies into an index (build, add), rebuilding every entry from its source
  when the model version changes.

CLI: ``insight index build|add``, ``insight similar``; server: ``GET /insight/similar/{image}``.
"""

from insight.retrieval.builder import IndexUpdate, add_to_index, build_index, case_id_for, gather_images
from insight.retrieval.index import INDEX_FORMAT, INDEX_JSON, CaseIndex, IndexedCase, SimilarCase
from insight.retrieval.labels import LABELS_FILE, Label, read_label_table

__all__ = ["INDEX_FORMAT", "INDEX_JSON", "CaseIndex", "IndexedCase", "SimilarCase", "IndexUpdate", "add_to_index",
           "build_index", "case_id_for", "gather_images", "LABELS_FILE", "Label", "read_label_table"]
