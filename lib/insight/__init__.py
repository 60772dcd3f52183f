"""SlicerInsight core library: explainable, weakly supervised PE analysis of CT pulmonary angiograms.

Subpackages, one per pipeline stage:

- ``insight.io``: reading and writing volumes (NIfTI, NRRD, DICOM series) with their geometry; atomic writes.
- ``insight.preprocessing``: orientation, spacing and intensity normalization onto the model grid.
- ``insight.phantom``: the synthetic CTPA generator with ground-truth clot masks.
- ``insight.models``: slice encoders, the INSIGHT head (detection + context), pooling and losses.
- ``insight.training``: weak-label training from scan-level labels.
- ``insight.inference``: loading a checkpoint once and predicting probability, heatmap and findings.
- ``insight.metrics``: classification and localization metrics.
- ``insight.cli``: the ``insight`` command line.
"""

__version__ = "0.1.0"
