"""Case embeddings: one fixed-length vector per CT study, from the INSIGHT model's encoder.

The encoder turns every 2.5D slice of the model grid into feature maps [N, C, h, w] (N slices,
C = ``model.encoder.out_channels``, h x w at the encoder stride). A study's embedding is the
channel-wise mean followed by the channel-wise maximum over all N*h*w locations, L2-normalised:

- dims ``2 * C`` (64 for the shipped demo model, whose encoder has C = 32), float32, unit length;
- Euclidean distance between two embeddings is in [0, 2] and cosine similarity is their dot product,
  comparable across studies of any size or slice count;
- deterministic: the same volume and checkpoint give the same vector (no dropout, eval mode).

The pooling covers the whole model grid, which preprocessing has already cropped to the body: pooling
only inside the model's search region was measured to make the vector depend on whether the lungs
were found (embedding distances jumping from 0.09 to 0.3-0.56 between small-field phantoms) and to
separate real non-CTPA chest CT from phantoms less well.

Used by retrieval (:mod:`insight.retrieval`), out-of-distribution QA (:mod:`insight.qa.ood`) and the
server's active-learning ``diversity`` score, all through this one implementation.

Public API::

    from insight.embeddings import CaseEmbedder, pooled_embedding, EncoderFeatureCapture
    embedder = CaseEmbedder.from_checkpoint("model.pt")
    case = embedder.embed_file("study.nii.gz")     # CaseEmbedding(name, vector [2C], model_version)
"""

from insight.embeddings.capture import EncoderFeatureCapture
from insight.embeddings.embedder import CaseEmbedder, CaseEmbedding
from insight.embeddings.pooling import EMBEDDING_KIND, embedding_dims, pooled_embedding

__all__ = ["EMBEDDING_KIND", "CaseEmbedder", "CaseEmbedding", "EncoderFeatureCapture", "embedding_dims",
           "pooled_embedding"]
