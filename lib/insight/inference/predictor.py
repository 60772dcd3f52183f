"""Load a checkpoint once, then predict PE probability, heatmap and findings for many volumes."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from insight import __version__
from insight.config import InsightConfig
from insight.devices import autocast_for, resolve_device
from insight.embeddings import EncoderFeatureCapture
from insight.errors import ModelError
from insight.inference.findings import Finding, extract_findings
from insight.io.atomic import write_json_atomic
from insight.io.image_io import case_name, read_image, write_image
from insight.models.checkpoint import load_checkpoint
from insight.models.insight_model import InsightModel
from insight.preprocessing import prepare_volume, slice_stack, to_reference_grid
from insight.qa import QAReport, SeriesMetadata, read_series_metadata, screen_heatmap, screen_study
from insight.qa.ood import OODCalibration, load_ood_for_checkpoint, screen_out_of_distribution

__all__ = ["PredictionResult", "InsightPredictor", "heatmap_to_grid"]

logger = logging.getLogger(__name__)


@dataclass
class PredictionResult:
    """One volume's prediction.

    Attributes:
        name: the case name (input file name without extension, or DICOM folder name).
        pe_probability: scan-level PE probability in [0, 1].
        heatmap: float32 SimpleITK image in [0, 1] on exactly the input's voxel grid.
        findings: connected regions of the heatmap above the finding threshold, highest peak first.
        model_version: the checkpoint's version string.
        finding_threshold: heatmap value the findings were cut at.
        timings_s: seconds per stage (read, qa, preprocess, model, postprocess; write once written).
        qa: quality-assurance result (:meth:`insight.qa.QAReport.to_json`): ``{"verdict": "pass" | "warn" |
            "fail", "summary": str, "flags": [{"code", "message", "severity", "check", ...}, ...],
            "measurements": {...}}``. A study failing QA is still scored; the verdict travels with it.
        source: the input path, when read from disk.
        embedding: float32 [2C] case embedding from this forward pass (:mod:`insight.embeddings`);
            not part of ``to_json``.
    """

    name: str
    pe_probability: float
    heatmap: sitk.Image
    findings: list[Finding]
    model_version: str
    finding_threshold: float
    timings_s: dict[str, float] = field(default_factory=dict)
    qa: dict[str, Any] = field(default_factory=lambda: QAReport().to_json())
    source: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (plain types)."""
        return {
            "name": self.name,
            "source": self.source,
            "pe_probability": round(float(self.pe_probability), 6),
            "model_version": self.model_version,
            "insight_version": __version__,
            "finding_threshold": self.finding_threshold,
            "findings": [f.to_dict() for f in self.findings],
            "qa": self.qa,
            "heatmap": {
                "file": f"{self.name}_heatmap.nii.gz",
                "size_xyz": list(self.heatmap.GetSize()),
                "spacing_xyz": [round(s, 6) for s in self.heatmap.GetSpacing()],
                "max": round(float(sitk.GetArrayViewFromImage(self.heatmap).max()), 6),
            },
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<name>_heatmap.nii.gz`` and ``<name>.json`` atomically; returns both paths."""
        out = Path(out_dir)
        start = time.perf_counter()
        heatmap_path = write_image(self.heatmap, out / f"{self.name}_heatmap.nii.gz")
        self.timings_s["write"] = time.perf_counter() - start
        json_path = out / f"{self.name}.json"
        write_json_atomic(json_path, self.to_json())
        return heatmap_path, json_path


def heatmap_to_grid(heatmap: torch.Tensor, stride: int, grid: sitk.Image) -> sitk.Image:
    """Upsample a feature-resolution heatmap onto the model grid.

    [N, h, w] (N = grid slices) -> float32 image with ``grid``'s geometry. Bilinear in-plane with
    ``align_corners=False``, so feature location i covers input pixels [i*stride, (i+1)*stride).
    """
    size_x, size_y, size_z = grid.GetSize()
    if heatmap.shape[0] != size_z:
        raise ValueError(f"heatmap has {heatmap.shape[0]} slices, grid has {size_z}")
    up = F.interpolate(heatmap.unsqueeze(1).float(), scale_factor=stride, mode="bilinear", align_corners=False)
    array = up[:, 0, :size_y, :size_x].clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(grid)
    return out


class InsightPredictor:
    """An INSIGHT model loaded once, predicting one volume at a time.

    Every prediction runs QA (:mod:`insight.qa`) first: acquisition and not-a-CTPA checks before the
    model, heatmap plausibility after it. QA never stops a prediction: the findings always come back,
    with the verdict in ``PredictionResult.qa`` and a logged warning when it is not "pass".

    Thread safety: ``predict_image`` holds no per-call state on the instance apart from the model,
    which runs under ``torch.inference_mode``; callers that share one predictor across threads
    should serialize calls (the MONAI Label app does).

    Args:
        run_qa: False skips QA for internal bulk uses that only need heatmaps (``qa`` then says
            ``"verdict": "not_run"``); user-facing predictions keep the default.
        ood: the model's out-of-distribution calibration (:mod:`insight.qa.ood`); None skips that check.
        ood_unavailable: why the model's OOD sidecar exists but could not be used (an info flag says so).
    """

    def __init__(self, model: InsightModel, config: InsightConfig, model_version: str,
                 device: torch.device | str = "cpu", run_qa: bool = True, ood: OODCalibration | None = None,
                 ood_unavailable: str | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.model_version = model_version
        self.run_qa = run_qa
        self.ood = ood
        self.ood_unavailable = ood_unavailable

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | None = "auto",
                        run_qa: bool = True) -> "InsightPredictor":
        dev = resolve_device(device)
        loaded = load_checkpoint(path, dev)
        logger.info("loaded model %s from %s on %s", loaded.model_version, path, dev)
        ood, ood_unavailable = None, None
        if run_qa:
            try:
                ood = load_ood_for_checkpoint(path, loaded.model_version)
            except ModelError as err:
                ood_unavailable = str(err)
                logger.error("out-of-distribution check off: %s", err)
        return cls(loaded.model, loaded.config, loaded.model_version, dev, run_qa=run_qa, ood=ood,
                   ood_unavailable=ood_unavailable)

    def predict_file(self, path: str | os.PathLike, header_folder: str | os.PathLike | None = None) -> PredictionResult:
        """Read a NIfTI/NRRD file or DICOM series folder and predict it (DICOM headers feed QA).

        ``header_folder``: the DICOM series folder a converted volume came from (e.g. a DICOMweb
        cache keeps ``<series>.nii.gz`` beside ``<series>/``); its headers feed QA as a series
        folder's would. Ignored when ``path`` is itself a folder.
        """
        start = time.perf_counter()
        image = read_image(path)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        header_source = path if Path(path).is_dir() else header_folder
        metadata = read_series_metadata(header_source) if self.run_qa and header_source is not None else None
        header_s = time.perf_counter() - start
        result = self.predict_image(image, name=case_name(path), metadata=metadata)
        if "qa" in result.timings_s:
            result.timings_s["qa"] += header_s
        result.timings_s = {"read": read_s, **result.timings_s}
        result.source = str(path)
        return result

    def predict_image(self, image: sitk.Image, name: str = "volume",
                      metadata: SeriesMetadata | None = None) -> PredictionResult:
        """Predict one volume (HU). The heatmap comes back on ``image``'s exact voxel grid.

        Args:
            image: the CT volume in HU.
            name: the case name used in the result and in log messages.
            metadata: DICOM header facts of the series (slice positions, modality...), when known.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        screening = screen_study(image, metadata) if self.run_qa else None
        if screening is not None:
            timings["qa"] = time.perf_counter() - start

        start = time.perf_counter()
        prepared = prepare_volume(image, self.config.preprocess)
        slices = slice_stack(torch.from_numpy(prepared.windowed), self.config.preprocess.slice_context)
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode(), autocast_for(self.device), EncoderFeatureCapture(self.model) as capture:
            region = torch.from_numpy(prepared.region).to(self.device, non_blocking=True)
            output = self.model(slices.to(self.device, non_blocking=True), region=region)
        embedding = capture.embedding()
        probability = float(output.probability[0])
        heatmap_features = output.heatmap[:, 0].float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["model"] = time.perf_counter() - start

        start = time.perf_counter()
        on_model_grid = heatmap_to_grid(heatmap_features, self.model.stride, prepared.grid)
        heatmap = to_reference_grid(on_model_grid, image, default_value=0.0)
        inference = self.config.inference
        findings = extract_findings(heatmap, inference.finding_threshold, inference.min_finding_volume_mm3,
                                    inference.max_findings)
        timings["postprocess"] = time.perf_counter() - start

        qa = {"verdict": "not_run", "summary": "QA was not run for this prediction", "flags": [], "measurements": {}}
        if screening is not None:
            start = time.perf_counter()
            ood_report = screen_out_of_distribution(self.ood, embedding, self.ood_unavailable)
            report = screening.report.merged(ood_report).merged(screen_heatmap(screening, heatmap, findings))
            timings["qa"] += time.perf_counter() - start
            if report.verdict != "pass":
                logger.warning("%s: %s. %s", name, report.summary(),
                               " ".join(f.message + "." for f in report.flags if f.severity != "info"))
            qa = report.to_json()
        return PredictionResult(name=name, pe_probability=probability, heatmap=heatmap, findings=findings,
                                model_version=self.model_version, finding_threshold=inference.finding_threshold,
                                timings_s=timings, qa=qa, embedding=embedding)
