"""SlicerInsight: explainable pulmonary-embolism analysis of CTPA from a MONAI Label server, in 3D Slicer.

Module / Widget / Logic / Test, as Slicer scripted modules are made:

- :class:`SlicerInsightLogic` does all the work and no GUI: it talks to the server through the
  Slicer-free package ``SlicerInsightLib`` (HTTP client, multipart, results, geometry, colormap,
  findings, labels; tested with pytest outside Slicer) and builds MRML nodes (heatmap volume,
  color table, segmentation, label export). Its network methods touch no MRML and may run in a
  worker thread; its MRML methods run on the GUI thread.
- :class:`SlicerInsightWidget` glues the Qt panel (``Resources/UI/SlicerInsight.ui``) to the Logic.
  Long calls run in a worker thread polled by a ``qt.QTimer``; a busy bar and a status text say
  what is happening, and the panel never freezes without feedback.
- :class:`SlicerInsightTest` runs the Logic against a real server (``SLICERINSIGHT_SERVER_URL``,
  default http://127.0.0.1:8000) and fails, saying why, when none is reachable.

Coordinates: Slicer's world is RAS (mm); the server reports findings in LPS (mm). The heatmap is
loaded from its NIfTI file, so Slicer places it with the file's own matrix, which the Test checks
against ``SlicerInsightLib.geometry``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Optional

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if _MODULE_DIR not in sys.path:  # Slicer adds it; kept for running the file from elsewhere
    sys.path.insert(0, _MODULE_DIR)

logger = logging.getLogger(__name__)

#: Where scripts/run-demo.sh serves; the Test reads SLICERINSIGHT_SERVER_URL first.
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
SERVER_URL_ENV = "SLICERINSIGHT_SERVER_URL"
SERVER_TOKEN_ENV = "SLICERINSIGHT_TOKEN"
#: The PE model of the SlicerInsight MONAI Label app.
DEFAULT_MODEL = "pe_insight"
#: QSettings keys (the token is never stored).
SETTINGS_URL = "SlicerInsight/ServerUrl"
SETTINGS_ANNOTATOR = "SlicerInsight/Annotator"
#: Milliseconds between two checks of a worker thread, and between two training status polls.
POLL_INTERVAL_MS = 50
TRAIN_POLL_INTERVAL_MS = 3000


# ------------------------------------------------------------------------------------------ Module
class SlicerInsight(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SlicerInsight"
        self.parent.categories = ["Chest Imaging Platform"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerInsight team"]
        self.parent.helpText = (
            "Pulmonary-embolism analysis of CT pulmonary angiograms by a SlicerInsight MONAI Label server: "
            "PE probability, an INSIGHT heatmap overlay (where the model looked), findings, conversion to an "
            "editable segmentation, and labels sent back for active learning. Research use only, not for "
            "clinical decisions. See SlicerInsight/README.md.")
        self.parent.acknowledgementText = (
            "INSIGHT: Zhang, Chen, Kanan, arXiv 2412.02012 (MLHC 2025). Built on MONAI Label and 3D Slicer.")


# ------------------------------------------------------------------------------------------ Logic
class SlicerInsightLogic(ScriptedLoadableModuleLogic):
    """All computation of the module, without GUI.

    Network methods (``serverInfo``, ``uploadAndAnalyze``, ``submitLabel``, ``nextSample``,
    ``downloadCase``, ``trainingStatus``, ...) raise ``SlicerInsightLib.errors.SlicerInsightError``
    subclasses with user-facing messages and touch no MRML: they may run in a worker thread.
    MRML methods (``volumeForUpload``, ``showHeatmap``, ``heatmapToSegmentation``, ``prepareLabel``,
    ...) run on the GUI thread.
    """

    IMAGE_ID_ATTRIBUTE = "SlicerInsight.ImageId"
    ROLE_ATTRIBUTE = "SlicerInsight.Role"
    MODEL_ATTRIBUTE = "SlicerInsight.Model"
    MODEL_VERSION_ATTRIBUTE = "SlicerInsight.ModelVersion"
    THRESHOLD_ATTRIBUTE = "SlicerInsight.HeatmapThreshold"
    MASK_DIGEST_ATTRIBUTE = "SlicerInsight.HeatmapMaskDigest"
    COLOR_NODE_NAME = "SlicerInsight inferno"
    SEGMENT_COLOR = (0.90, 0.20, 0.20)

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.client = None

    # -------------------------------------------------------------- server (network, thread-safe)
    def connect(self, serverUrl: str, token: Optional[str] = None):
        """Set the server to talk to (no request yet); returns the client.

        Raises:
            InvalidInputError: not an http(s) URL.
        """
        from SlicerInsightLib.client import InsightClient

        self.client = InsightClient(serverUrl or DEFAULT_SERVER_URL, token=token)
        return self.client

    def _client(self):
        if self.client is None:
            from SlicerInsightLib.errors import InvalidInputError

            raise InvalidInputError("not connected: enter the server URL and press Connect")
        return self.client

    def serverInfo(self):
        """The server's models (with model version and status), trainers and strategies (``ServerInfo``)."""
        return self._client().info()

    def trainingStatus(self, model: str = DEFAULT_MODEL):
        """``TrainStatus``; ``state == "not_offered"`` when the server trains nothing for ``model``."""
        return self._client().train_status(model)

    def startTraining(self, model: str = DEFAULT_MODEL):
        """Start training on the server; raises ``NotOfferedError`` when it has no trainer for ``model``."""
        return self._client().train_start(model)

    def stopTraining(self, model: str = DEFAULT_MODEL) -> None:
        self._client().train_stop(model)

    def nextSample(self, strategy: Optional[str] = None):
        """The next case to label (``NextSample``), or None when every image has a final label."""
        return self._client().next_sample(strategy)

    def downloadCase(self, imageId: str) -> str:
        """Download a datastore image into the module's temporary folder; returns the file path."""
        data, name = self._client().download_image(imageId)
        path = os.path.join(self.temporaryDirectory(), os.path.basename(name) or f"{imageId}.nii.gz")
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def uploadAndAnalyze(self, volume: Optional[dict], imageId: Optional[str], model: str = DEFAULT_MODEL):
        """Make sure the server has the CT, then analyse it.

        Args:
            volume: from :meth:`volumeForUpload` (voxels, matrix and name), or None when the server
                is known to hold ``imageId``.
            imageId: the server's id; None to derive one from the volume's name and content.
            model: the infer model.

        Returns:
            (``InferResult``, the image id used, whether the volume was uploaded now).

        Raises:
            NotFoundError: no volume to upload and the server does not have ``imageId``.
        """
        from SlicerInsightLib.client import content_image_id

        client = self._client()
        if volume is not None and not imageId:
            imageId = content_image_id(volume["name"], volume["array"], volume["ijkToRas"])
        if not imageId:
            from SlicerInsightLib.errors import InvalidInputError

            raise InvalidInputError("no CT volume and no server image id to analyse")
        uploaded = self.ensureImageOnServer(imageId, volume)
        return client.infer(imageId, model=model), imageId, uploaded

    def ensureImageOnServer(self, imageId: str, volume: Optional[dict]) -> bool:
        """Upload ``volume`` as ``imageId`` unless the server already has it; True when uploaded."""
        from SlicerInsightLib.errors import NotFoundError
        from SlicerInsightLib.nifti import write_nifti

        client = self._client()
        if client.has_image(imageId):
            return False
        if volume is None:
            raise NotFoundError(f"the server has no image {imageId!r}: clear the image id to upload the volume")
        data = write_nifti(volume["array"], volume["ijkToRas"], compresslevel=1)
        client.upload_image(data, imageId, filename=f"{imageId}.nii.gz",
                            info={"uploaded_by": "SlicerInsight", "slicer_name": volume["name"]})
        return True

    def submitLabel(self, imageId: str, labelData: bytes, provenance, volume: Optional[dict] = None):
        """Store a label (NIfTI bytes from :meth:`prepareLabel`) with its provenance; uploads the CT
        first when the server does not have it. Returns the ``LabelReceipt``."""
        self.ensureImageOnServer(imageId, volume)
        return self._client().save_label(imageId, labelData, provenance)

    def downloadLabel(self, labelId: str, tag: str = "final"):
        """A stored label read back: (uint8 voxels [K, J, I], ``VolumeGeometry``)."""
        from SlicerInsightLib.geometry import nifti_geometry
        from SlicerInsightLib.nifti import read_nifti

        data = self._client().download_label(labelId, tag)
        array, header = read_nifti(data)
        return array, nifti_geometry(header)

    # -------------------------------------------------------------- volumes (MRML, GUI thread)
    @staticmethod
    def ijkToRas(volumeNode) -> Any:
        """The node's 4x4 IJK-to-RAS matrix as numpy (mm)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def temporaryDirectory(self) -> str:
        """``<Slicer temporary path>/SlicerInsight`` (created on first use)."""
        path = os.path.join(slicer.app.temporaryPath, "SlicerInsight")
        os.makedirs(path, exist_ok=True)
        return path

    def knownImageId(self, volumeNode) -> Optional[str]:
        """The server image id stored on the node (set by 'Next case' or a previous upload), or None."""
        return volumeNode.GetAttribute(self.IMAGE_ID_ATTRIBUTE) or None if volumeNode else None

    def volumeForUpload(self, volumeNode) -> dict:
        """A copy of the CT's voxels ([K, J, I]), its IJK-to-RAS matrix (mm) and name, for a worker thread.

        Raises:
            InvalidInputError: no volume, or not a scalar volume.
        """
        from SlicerInsightLib.errors import InvalidInputError

        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InvalidInputError("select a CT volume first")
        array = slicer.util.arrayFromVolume(volumeNode)
        if array.ndim != 3:
            raise InvalidInputError(f"{volumeNode.GetName()} is not a scalar 3D volume (array shape {array.shape})")
        return {"array": array.copy(), "ijkToRas": self.ijkToRas(volumeNode), "name": volumeNode.GetName()}

    def loadCaseVolume(self, path: str, imageId: str):
        """Load a downloaded case as a scalar volume, remembering its server image id."""
        node = slicer.util.loadVolume(path, {"name": imageId, "show": False, "labelmap": False, "singleFile": True})
        node.SetAttribute(self.IMAGE_ID_ATTRIBUTE, imageId)
        return node

    def analyzeVolume(self, volumeNode, model: str = DEFAULT_MODEL, imageId: Optional[str] = None,
                      threshold: Optional[float] = None, opacity: Optional[float] = None):
        """Synchronous analysis of a volume node (what the Widget does in steps, used by the Test).

        Returns:
            (``InferResult``, heatmap volume node).
        """
        imageId = imageId or self.knownImageId(volumeNode)
        volume = None if imageId and self.knownImageId(volumeNode) == imageId else self.volumeForUpload(volumeNode)
        result, imageId, _ = self.uploadAndAnalyze(volume, imageId, model)
        volumeNode.SetAttribute(self.IMAGE_ID_ATTRIBUTE, imageId)
        return result, self.showHeatmap(result, volumeNode, threshold, opacity)

    # -------------------------------------------------------------- heatmap display
    def showHeatmap(self, result, ctNode, threshold: Optional[float] = None, opacity: Optional[float] = None):
        """Load the result's heatmap as a volume node and show it over the CT.

        The bytes are written to a temporary .nii.gz and loaded by Slicer, so Slicer reads the
        geometry from the file exactly as for any NIfTI. The display uses the inferno color table,
        window [0, 1], transparent below ``threshold``; the slice views get the CT as background and
        the heatmap as foreground at ``opacity``.
        """
        from SlicerInsightLib import colormap
        from SlicerInsightLib.errors import MalformedAnswerError

        if not result.heatmap:
            raise MalformedAnswerError("the server sent no heatmap")
        threshold = colormap.check_threshold(colormap.DEFAULT_THRESHOLD if threshold is None else threshold)
        opacity = colormap.check_opacity(colormap.DEFAULT_OPACITY if opacity is None else opacity)
        base = result.image_id or (ctNode.GetName() if ctNode else "volume")
        for old in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):  # one heatmap per image
            if old.GetAttribute(self.ROLE_ATTRIBUTE) == "heatmap" and old.GetAttribute(self.IMAGE_ID_ATTRIBUTE) == base:
                slicer.mrmlScene.RemoveNode(old)
        path = os.path.join(self.temporaryDirectory(), f"{base}_heatmap.nii.gz")
        with open(path, "wb") as handle:
            handle.write(result.heatmap)
        node = slicer.util.loadVolume(path, {"name": f"{base} PE heatmap", "show": False, "labelmap": False,
                                            "singleFile": True})
        node.SetAttribute(self.ROLE_ATTRIBUTE, "heatmap")
        node.SetAttribute(self.IMAGE_ID_ATTRIBUTE, result.image_id)
        node.SetAttribute(self.MODEL_ATTRIBUTE, result.model)
        node.SetAttribute(self.MODEL_VERSION_ATTRIBUTE, result.model_version)
        if ctNode is not None and ctNode.GetTransformNodeID():  # the CT sits under a transform: so does its heatmap
            node.SetAndObserveTransformNodeID(ctNode.GetTransformNodeID())
        self.styleHeatmap(node, threshold)
        slicer.util.setSliceViewerLayers(background=ctNode, foreground=node, foregroundOpacity=opacity, fit=False)
        return node

    def colorNode(self, threshold: float):
        """The module's inferno color table node (created once per scene), transparent below ``threshold``."""
        from SlicerInsightLib import colormap

        node = None
        for candidate in slicer.util.getNodesByClass("vtkMRMLColorTableNode"):
            if candidate.GetName() == self.COLOR_NODE_NAME:
                node = candidate
                break
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", self.COLOR_NODE_NAME)
            node.SetTypeToUser()
            node.SetNumberOfColors(colormap.TABLE_SIZE)
        for index, (r, g, b, a) in enumerate(colormap.colormap_rgba(threshold)):
            node.SetColor(index, float(r), float(g), float(b), float(a))
        return node

    def styleHeatmap(self, heatmapNode, threshold: float) -> None:
        """Color table, window [0, 1] and threshold of the heatmap's display node."""
        from SlicerInsightLib import colormap

        threshold = colormap.check_threshold(threshold)
        heatmapNode.CreateDefaultDisplayNodes()
        display = heatmapNode.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.colorNode(threshold).GetID())
        display.AutoWindowLevelOff()
        low, high = 0.0, 1.0
        display.SetWindowLevelMinMax(low, high)
        display.AutoThresholdOff()
        display.SetLowerThreshold(threshold)
        display.SetUpperThreshold(high)
        display.ApplyThresholdOn()
        display.SetInterpolate(True)
        heatmapNode.SetAttribute(self.THRESHOLD_ATTRIBUTE, f"{threshold:.4f}")

    def setHeatmapThreshold(self, heatmapNode, threshold: float) -> None:
        """Move the transparency threshold (display node and color table)."""
        if heatmapNode is not None:
            self.styleHeatmap(heatmapNode, threshold)

    def setOverlayOpacity(self, opacity: float) -> None:
        """Foreground opacity of every slice view."""
        from SlicerInsightLib import colormap

        slicer.util.setSliceViewerLayers(foregroundOpacity=colormap.check_opacity(opacity))

    def jumpToFinding(self, row, referenceNode=None) -> None:
        """Centre the slice views on a finding (``FindingRow.centroid_ras``, mm, in the CT's own space;
        moved to world coordinates when ``referenceNode``, the CT, sits under a transform)."""
        self.jumpToRas(self.localToWorld(referenceNode, row.centroid_ras))

    def jumpToRas(self, ras) -> None:
        """Centre the slice views on a world RAS point (mm)."""
        r, a, s = (float(v) for v in ras)
        slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)

    @staticmethod
    def localToWorld(node, point):
        """A point (RAS, mm) in ``node``'s space, in world coordinates (unchanged without a transform)."""
        parent = node.GetParentTransformNode() if node is not None else None
        if parent is None:
            return tuple(float(v) for v in point)
        transform = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(transform)
        return tuple(transform.TransformPoint([float(v) for v in point]))

    # -------------------------------------------------------------- segmentation and labels
    def heatmapToSegmentation(self, heatmapNode, threshold: float, referenceVolumeNode, segmentationNode=None):
        """Threshold the heatmap into a "PE" segment of a (new) segmentation node.

        Voxels with heatmap value >= ``threshold`` form the segment; an empty result still gives an
        empty "PE" segment to paint in. The node remembers the model version, the threshold and a
        digest of the mask, so a later submission can tell "heatmap" from "edited".
        """
        from SlicerInsightLib import colormap, labels

        values = slicer.util.arrayFromVolume(heatmapNode)
        mask = colormap.threshold_mask(values, threshold)
        if segmentationNode is None:
            base = heatmapNode.GetAttribute(self.IMAGE_ID_ATTRIBUTE) or heatmapNode.GetName()
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{base} PE segmentation")
        segmentationNode.CreateDefaultDisplayNodes()
        if referenceVolumeNode.GetTransformNodeID():
            segmentationNode.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        segmentation = segmentationNode.GetSegmentation()
        name = f"PE (heatmap >= {threshold:.2f})"
        if mask.any():
            before = set(self._segmentIds(segmentationNode))
            labelNode = slicer.util.addVolumeFromArray(mask, ijkToRAS=slicer.util.vtkMatrixFromArray(
                                                       self.ijkToRas(heatmapNode)),
                                                       name="SlicerInsight heatmap mask",
                                                       nodeClassName="vtkMRMLLabelMapVolumeNode")
            try:
                ok = slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
            finally:
                slicer.mrmlScene.RemoveNode(labelNode)
            added = [i for i in self._segmentIds(segmentationNode) if i not in before]
            if not ok or not added:
                from SlicerInsightLib.errors import SlicerInsightError

                raise SlicerInsightError("Slicer could not import the thresholded heatmap as a segment")
            segment = segmentation.GetSegment(added[0])
            segment.SetName(name)
            segment.SetColor(*self.SEGMENT_COLOR)
            segmentationNode.SetAttribute(self.MASK_DIGEST_ATTRIBUTE, labels.mask_digest(mask))
        else:
            segmentation.AddEmptySegment("PE", name, list(self.SEGMENT_COLOR))
            segmentationNode.SetAttribute(self.MASK_DIGEST_ATTRIBUTE, "")
        for attribute in (self.IMAGE_ID_ATTRIBUTE, self.MODEL_ATTRIBUTE, self.MODEL_VERSION_ATTRIBUTE):
            segmentationNode.SetAttribute(attribute, heatmapNode.GetAttribute(attribute) or "")
        segmentationNode.SetAttribute(self.THRESHOLD_ATTRIBUTE, f"{threshold:.4f}")
        return segmentationNode

    @staticmethod
    def _segmentIds(segmentationNode) -> list:
        ids = vtk.vtkStringArray()
        segmentationNode.GetSegmentation().GetSegmentIDs(ids)
        return [ids.GetValue(index) for index in range(ids.GetNumberOfValues())]

    def segmentationMask(self, segmentationNode, referenceVolumeNode):
        """Every segment of the segmentation, merged into one uint8 mask (1 = PE) on the reference
        volume's voxel grid, shape [K, J, I]."""
        import numpy as np

        from SlicerInsightLib.errors import SlicerInsightError

        shape = slicer.util.arrayFromVolume(referenceVolumeNode).shape
        ids = vtk.vtkStringArray()
        segmentationNode.GetSegmentation().GetSegmentIDs(ids)
        if ids.GetNumberOfValues() == 0:
            return np.zeros(shape, dtype=np.uint8)
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SlicerInsight label export")
        try:
            ok = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelNode, referenceVolumeNode, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            if not ok or labelNode.GetImageData() is None:
                raise SlicerInsightError("Slicer could not export the segmentation to a label map")
            mask = (slicer.util.arrayFromVolume(labelNode) > 0).astype(np.uint8)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        if mask.shape != shape:
            raise SlicerInsightError(f"the exported label map has shape {mask.shape}, the CT {shape}: set the "
                                     "segmentation's geometry from the CT and try again")
        return mask

    def prepareLabel(self, referenceVolumeNode, segmentationNode, scanLabel: str, annotator: str,
                     imageId: Optional[str] = None):
        """Everything a submission sends: NIfTI bytes of the mask on the CT's grid and the provenance.

        Args:
            referenceVolumeNode: the CT.
            segmentationNode: the (edited) segmentation, or None (then the mask is empty).
            scanLabel: ``pe``, ``no_pe`` or ``uncertain`` (or the display texts).
            annotator: who submits.
            imageId: the server image id (stored in the provenance).

        Returns:
            (label NIfTI bytes, ``LabelProvenance``, the uint8 mask [K, J, I]).

        Raises:
            InvalidInputError: a PE label without a mask, a "no PE" label with one, no annotator.
        """
        import numpy as np

        from SlicerInsightLib import labels
        from SlicerInsightLib.nifti import write_nifti

        if segmentationNode is not None:
            mask = self.segmentationMask(segmentationNode, referenceVolumeNode)
            digest = segmentationNode.GetAttribute(self.MASK_DIGEST_ATTRIBUTE) or None
            model = segmentationNode.GetAttribute(self.MODEL_ATTRIBUTE) or None
            version = segmentationNode.GetAttribute(self.MODEL_VERSION_ATTRIBUTE) or None
            threshold = segmentationNode.GetAttribute(self.THRESHOLD_ATTRIBUTE) or None
        else:
            mask = np.zeros(slicer.util.arrayFromVolume(referenceVolumeNode).shape, dtype=np.uint8)
            digest = model = version = threshold = None
        labels.check_submission(scanLabel, mask)
        method = labels.mask_method(mask, digest)
        provenance = labels.LabelProvenance(
            annotator=annotator, scan_label=scanLabel, method=method, model=model, model_version=version,
            heatmap_threshold=float(threshold) if threshold and method in ("heatmap", "edited") else None,
            image_id=imageId)
        return write_nifti(mask, self.ijkToRas(referenceVolumeNode)), provenance, mask


# ------------------------------------------------------------------------------------------ Widget helpers
class _BackgroundCall:
    """Run ``work()`` in a Python thread; a ``qt.QTimer`` on the GUI thread waits for it.

    ``onDone(result)`` or ``onError(exception)`` run on the GUI thread; ``onTick(seconds)`` every
    poll. The GUI thread sleeps a few milliseconds per poll so the worker gets the GIL even where
    the embedding application holds it while idle.
    """

    def __init__(self, work: Callable[[], Any], onDone: Callable[[Any], None], onError: Callable[[Exception], None],
                 onTick: Optional[Callable[[float], None]] = None) -> None:
        import threading
        import time

        self._time = time
        self._work, self._onDone, self._onError, self._onTick = work, onDone, onError, onTick
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._finished = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="SlicerInsight worker", daemon=True)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self._thread.start()
        self._timer.start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as err:  # reported on the GUI thread
            self._error = err
        finally:
            self._finished.set()

    def _poll(self) -> None:
        if not self._finished.wait(0.01):
            if self._onTick:
                self._onTick(self._time.monotonic() - self._started)
            return
        self._timer.stop()
        if self._error is not None:
            self._onError(self._error)
        else:
            self._onDone(self._result)

    def cancel(self) -> None:
        """Stop waiting (the thread finishes on its own; its result is dropped)."""
        self._timer.stop()


# ------------------------------------------------------------------------------------------ Widget
class SlicerInsightWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: server, analysis, heatmap, segmentation and label, active learning and training."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SlicerInsightLogic] = None
        self._info = None
        self._result = None
        self._findingRows: list = []
        self._heatmapNode = None
        self._task: Optional[_BackgroundCall] = None
        self._trainTask: Optional[_BackgroundCall] = None
        self._trainTimer = None
        self._trainRunning = False

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SlicerInsight.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlicerInsightLogic()

        settings = qt.QSettings()
        self.ui.serverUrlLineEdit.text = settings.value(SETTINGS_URL, DEFAULT_SERVER_URL) or DEFAULT_SERVER_URL
        self.ui.annotatorLineEdit.text = settings.value(SETTINGS_ANNOTATOR, "") or ""
        self.ui.progressBar.setVisible(False)
        self.ui.trainProgressBar.setVisible(False)

        from SlicerInsightLib.findings import TABLE_COLUMNS

        table = self.ui.findingsTableWidget
        table.setColumnCount(len(TABLE_COLUMNS))
        table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        table.horizontalHeader().setStretchLastSection(True)
        table.verticalHeader().setVisible(False)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.serverUrlLineEdit.connect("returnPressed()", self.onConnect)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyze)
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.findingsTableWidget.connect("cellClicked(int,int)", self.onFindingClicked)
        self.ui.convertButton.connect("clicked(bool)", self.onConvert)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.annotatorLineEdit.connect("textChanged(QString)", self.updateButtons)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.nextCaseButton.connect("clicked(bool)", self.onNextCase)
        self.ui.trainButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.stopTrainButton.connect("clicked(bool)", self.onStopTraining)

        self._trainTimer = qt.QTimer()
        self._trainTimer.setInterval(TRAIN_POLL_INTERVAL_MS)
        self._trainTimer.connect("timeout()", self.pollTraining)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.updateButtons()

    def cleanup(self) -> None:
        if self._trainTimer is not None:
            self._trainTimer.stop()
        for task in (self._task, self._trainTask):
            if task is not None:
                task.cancel()
        self.removeObservers()

    def onSceneEndClose(self, caller, event) -> None:
        self._clearResult()
        self.updateButtons()

    # -------------------------------------------------------------- helpers
    def _model(self) -> str:
        return self.ui.modelComboBox.currentText or DEFAULT_MODEL

    def _scanLabel(self) -> str:
        if self.ui.peRadioButton.checked:
            return "pe"
        if self.ui.noPeRadioButton.checked:
            return "no_pe"
        return "uncertain"

    def _setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")
        (logger.warning if error else logger.info)("%s", text)

    def _runInBackground(self, description: str, work: Callable[[], Any], onDone: Callable[[Any], None],
                         onError: Optional[Callable[[Exception], None]] = None) -> None:
        """Run ``work`` in a worker thread with a busy bar and "description... (N s)" as status;
        ``onDone(result)`` (or ``onError(exception)``, after the status shows the error) runs on the GUI thread."""
        if self._task is not None:
            self._setStatus("Please wait: another request is still running.", error=True)
            return
        self.ui.progressBar.setVisible(True)
        self._setStatus(f"{description}...")

        def finish() -> None:
            self._task = None
            self.ui.progressBar.setVisible(False)
            self.updateButtons()

        def done(result: Any) -> None:
            finish()
            try:
                onDone(result)
            except Exception as err:  # a failure in the MRML step: show it like a server error
                self._showError(description, err)

        def failed(err: Exception) -> None:
            finish()
            self._showError(description, err)
            if onError is not None:
                onError(err)

        def tick(seconds: float) -> None:
            self.ui.statusLabel.text = f"{description}... ({seconds:.0f} s)"

        self._task = _BackgroundCall(work, done, failed, tick)
        self.updateButtons()

    def _showError(self, description: str, err: Exception) -> None:
        from SlicerInsightLib.errors import SlicerInsightError

        if isinstance(err, SlicerInsightError):
            self._setStatus(f"{description} failed: {err}", error=True)
        else:
            logger.exception("%s failed", description, exc_info=err)
            self._setStatus(f"{description} failed unexpectedly ({type(err).__name__}: {err}); see the Python "
                            "console for details", error=True)

    def updateButtons(self, *args) -> None:
        connected = self._info is not None
        idle = self._task is None
        volume = self.ui.inputVolumeSelector.currentNode()
        model = self._info.models.get(self._model()) if connected else None
        self.ui.analyzeButton.enabled = bool(idle and connected and volume is not None and model is not None
                                             and model.ready)
        self.ui.convertButton.enabled = bool(idle and self._heatmapNode is not None and volume is not None)
        self.ui.submitButton.enabled = bool(idle and connected and volume is not None
                                            and self.ui.annotatorLineEdit.text.strip())
        self.ui.nextCaseButton.enabled = bool(idle and connected and self._info.strategy_names)
        offersTraining = bool(connected and self._info.offers_training(self._model()))
        self.ui.trainButton.enabled = bool(idle and offersTraining and not self._trainRunning)
        self.ui.stopTrainButton.enabled = bool(idle and offersTraining and self._trainRunning)

    # -------------------------------------------------------------- server
    def onConnect(self, *args) -> None:
        from SlicerInsightLib.errors import SlicerInsightError

        url = self.ui.serverUrlLineEdit.text.strip() or DEFAULT_SERVER_URL
        try:
            self.logic.connect(url, self.ui.tokenLineEdit.text.strip() or None)
        except SlicerInsightError as err:
            self.ui.serverStatusLabel.text = str(err)
            return
        qt.QSettings().setValue(SETTINGS_URL, url)
        self.ui.serverStatusLabel.text = f"Connecting to {url}..."

        def work():
            info = self.logic.serverInfo()
            model = DEFAULT_MODEL if DEFAULT_MODEL in info.models else next(iter(info.models), DEFAULT_MODEL)
            return info, self.logic.trainingStatus(model)

        def done(answer) -> None:
            info, training = answer
            self._info = info
            self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for name in info.models:
                self.ui.modelComboBox.addItem(name)
            index = self.ui.modelComboBox.findText(DEFAULT_MODEL)
            self.ui.modelComboBox.setCurrentIndex(max(index, 0))
            self.ui.modelComboBox.blockSignals(False)
            self.ui.strategyComboBox.clear()
            for name in info.strategy_names:
                self.ui.strategyComboBox.addItem(name)
            datastore = info.datastore or {}
            self.ui.serverStatusLabel.text = (f"Connected to {info.name} {info.version}: {len(info.models)} model(s), "
                                              f"{datastore.get('total', '?')} image(s), "
                                              f"{datastore.get('completed', '?')} labelled.")
            self.onModelChanged()
            self._showTraining(training)
            self._setStatus("Connected.")

        def failed(err) -> None:
            self._info = None
            self.ui.serverStatusLabel.text = str(err)
            self.updateButtons()

        self._runInBackground(f"Connecting to {url}", work, done, failed)

    def onModelChanged(self, *args) -> None:
        model = self._info.models.get(self._model()) if self._info else None
        if model is None:
            self.ui.modelVersionLabel.text = "-"
        elif model.ready:
            self.ui.modelVersionLabel.text = f"{model.model_version or 'unknown'} ({model.device or 'device ?'})"
        else:
            self.ui.modelVersionLabel.text = f"not loaded: {model.error or 'no reason given'}"
        self.updateButtons()

    # -------------------------------------------------------------- analysis
    def onInputVolumeChanged(self, node) -> None:
        imageId = self.logic.knownImageId(node) if node is not None else None
        self.ui.imageIdLineEdit.text = imageId or ""
        heatmapId = self._heatmapNode.GetAttribute(self.logic.IMAGE_ID_ATTRIBUTE) if self._heatmapNode else None
        if heatmapId is not None and heatmapId != imageId:  # the shown result belongs to another CT
            self._clearResult()
        self.updateButtons()

    def _clearResult(self) -> None:
        self._result = None
        self._heatmapNode = None
        self._findingRows = []
        self._fillFindings()
        self.ui.probabilityLabel.text = "-"

    def onAnalyze(self, *args) -> None:
        from SlicerInsightLib.errors import SlicerInsightError

        ctNode = self.ui.inputVolumeSelector.currentNode()
        imageId = self.ui.imageIdLineEdit.text.strip() or self.logic.knownImageId(ctNode)
        try:
            volume = None if imageId and imageId == self.logic.knownImageId(ctNode) else \
                self.logic.volumeForUpload(ctNode)
        except SlicerInsightError as err:
            self._setStatus(str(err), error=True)
            return
        model = self._model()
        self.ui.probabilityLabel.text = "..."

        def done(answer) -> None:
            result, usedId, uploaded = answer
            ctNode.SetAttribute(self.logic.IMAGE_ID_ATTRIBUTE, usedId)
            self.ui.imageIdLineEdit.text = usedId
            self._result = result
            self._heatmapNode = self.logic.showHeatmap(result, ctNode, self.ui.thresholdSliderWidget.value,
                                                       self.ui.opacitySliderWidget.value)
            self.ui.probabilityLabel.text = f"{result.pe_probability:.1%}"
            self._findingRows = list(result.findings)
            self._fillFindings()
            flags = "; ".join(str(flag.get("message", flag)) for flag in result.qa_flags)
            self._setStatus(f"Analysed {usedId}{' (uploaded)' if uploaded else ''} with model "
                            f"{result.model_version}: {len(result.findings)} finding(s)."
                            + (f" QA: {flags}" if flags else ""))
            self.updateButtons()

        self._runInBackground(f"Analysing {ctNode.GetName()}" + ("" if volume is None else " (upload if needed)"),
                              lambda: self.logic.uploadAndAnalyze(volume, imageId, model), done)

    def _fillFindings(self) -> None:
        from SlicerInsightLib.findings import table_cells, visible_findings

        rows = visible_findings(self._findingRows, self.ui.thresholdSliderWidget.value)
        table = self.ui.findingsTableWidget
        table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, text in enumerate(table_cells(row)):
                item = qt.QTableWidgetItem(text)
                item.setData(qt.Qt.UserRole, self._findingRows.index(row))
                table.setItem(index, column, item)
        table.resizeColumnsToContents()

    def onFindingClicked(self, rowIndex: int, column: int) -> None:
        item = self.ui.findingsTableWidget.item(rowIndex, 0)
        if item is None:
            return
        row = self._findingRows[int(item.data(qt.Qt.UserRole))]
        self.logic.jumpToFinding(row, self.ui.inputVolumeSelector.currentNode())
        r, a, s = row.centroid_ras
        self._setStatus(f"Finding {row.rank}: score {row.peak_score:.3f}, {row.volume_mm3:.0f} mm³ at RAS "
                        f"({r:.1f}, {a:.1f}, {s:.1f}) mm.")

    def onThresholdChanged(self, value: float) -> None:
        if self._heatmapNode is not None and slicer.mrmlScene.IsNodePresent(self._heatmapNode):
            self.logic.setHeatmapThreshold(self._heatmapNode, value)
        self._fillFindings()

    def onOpacityChanged(self, value: float) -> None:
        self.logic.setOverlayOpacity(value)

    # -------------------------------------------------------------- segmentation and label
    def onConvert(self, *args) -> None:
        ctNode = self.ui.inputVolumeSelector.currentNode()
        try:
            segmentationNode = self.logic.heatmapToSegmentation(self._heatmapNode, self.ui.thresholdSliderWidget.value,
                                                                ctNode)
        except Exception as err:
            self._showError("Converting the heatmap", err)
            return
        self.ui.segmentationSelector.setCurrentNode(segmentationNode)
        segments = segmentationNode.GetSegmentation().GetNumberOfSegments()
        self._setStatus(f"Segmentation '{segmentationNode.GetName()}' with {segments} segment(s): edit it in the "
                        "Segment Editor, then submit.")
        self.updateButtons()

    def onSubmit(self, *args) -> None:
        ctNode = self.ui.inputVolumeSelector.currentNode()
        segmentationNode = self.ui.segmentationSelector.currentNode()
        annotator = self.ui.annotatorLineEdit.text.strip()
        imageId = self.ui.imageIdLineEdit.text.strip() or self.logic.knownImageId(ctNode)
        try:
            volume = None if imageId and imageId == self.logic.knownImageId(ctNode) else \
                self.logic.volumeForUpload(ctNode)
            if not imageId:
                from SlicerInsightLib.client import content_image_id

                imageId = content_image_id(volume["name"], volume["array"], volume["ijkToRas"])
            labelData, provenance, _ = self.logic.prepareLabel(ctNode, segmentationNode, self._scanLabel(), annotator,
                                                               imageId)
        except Exception as err:
            self._showError("Preparing the label", err)
            return
        qt.QSettings().setValue(SETTINGS_ANNOTATOR, annotator)

        def done(receipt) -> None:
            ctNode.SetAttribute(self.logic.IMAGE_ID_ATTRIBUTE, imageId)
            self.ui.imageIdLineEdit.text = imageId
            from SlicerInsightLib.labels import SCAN_LABEL_TEXT

            self._setStatus(f"Label saved for {receipt.image_id} ({SCAN_LABEL_TEXT[provenance.scan_label]}, mask "
                            f"{provenance.method}, by {provenance.annotator}).")

        self._runInBackground(f"Submitting the label of {imageId}",
                              lambda: self.logic.submitLabel(imageId, labelData, provenance, volume), done)

    # -------------------------------------------------------------- active learning
    def onNextCase(self, *args) -> None:
        strategy = self.ui.strategyComboBox.currentText or None

        def work():
            sample = self.logic.nextSample(strategy)
            return (sample, self.logic.downloadCase(sample.image_id)) if sample is not None else (None, None)

        def done(answer) -> None:
            sample, path = answer
            if sample is None:
                self._setStatus("Every image on the server has a label: nothing left to annotate.")
                return
            node = self.logic.loadCaseVolume(path, sample.image_id)
            self._clearResult()
            self.ui.inputVolumeSelector.setCurrentNode(node)
            self.ui.imageIdLineEdit.text = sample.image_id
            slicer.util.setSliceViewerLayers(background=node, foreground=None, fit=True)
            self._setStatus(f"Next case ({sample.strategy}): {sample.image_id}. Press 'Analyze for PE'.")
            self.updateButtons()

        self._runInBackground("Fetching the next case", work, done)

    # -------------------------------------------------------------- training
    def onStartTraining(self, *args) -> None:
        model = self._model()

        def done(status) -> None:
            self._showTraining(status)

        self._runInBackground(f"Starting training of {model}", lambda: self.logic.startTraining(model), done)

    def onStopTraining(self, *args) -> None:
        model = self._model()
        self._runInBackground("Stopping training", lambda: self.logic.stopTraining(model),
                              lambda _: self.pollTraining())

    def pollTraining(self) -> None:
        """Ask for the training status in the background (every few seconds while training runs)."""
        if self._trainTask is not None or self.logic.client is None:
            return
        model = self._model()

        def done(status) -> None:
            self._trainTask = None
            self._showTraining(status)

        def failed(err) -> None:
            self._trainTask = None
            self.ui.trainProgressLabel.text = f"Training status unavailable: {err}"

        self._trainTask = _BackgroundCall(lambda: self.logic.trainingStatus(model), done, failed)

    def _showTraining(self, status) -> None:
        self._trainRunning = bool(status.running)
        self.ui.trainingStatusLabel.text = status.message if status.state == "not_offered" else status.state
        self.ui.trainProgressLabel.text = status.message
        self.ui.trainProgressBar.setVisible(self._trainRunning)
        if self._trainRunning and not self._trainTimer.isActive():
            self._trainTimer.start()
        elif not self._trainRunning and self._trainTimer.isActive():
            self._trainTimer.stop()
        self.updateButtons()


# ------------------------------------------------------------------------------------------ Test
class SlicerInsightTest(ScriptedLoadableModuleTest):
    """The Logic in a real scene against a real server (``SLICERINSIGHT_SERVER_URL``, default
    http://127.0.0.1:8000; ``SLICERINSIGHT_TOKEN`` if it needs one). Fails when no server answers."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_AnalyzeConvertSubmit()

    def test_AnalyzeConvertSubmit(self) -> None:
        import numpy as np

        from SlicerInsightLib import colormap
        from SlicerInsightLib.errors import SlicerInsightError
        from SlicerInsightLib.geometry import matrices_close, nifti_geometry

        url = os.environ.get(SERVER_URL_ENV) or DEFAULT_SERVER_URL
        logic = SlicerInsightLogic()
        logic.connect(url, os.environ.get(SERVER_TOKEN_ENV) or None)
        self.delayDisplay(f"Connecting to {url}")
        try:
            info = logic.serverInfo()
        except SlicerInsightError as err:
            self.fail(f"SlicerInsightTest needs a running SlicerInsight server at {url} (set {SERVER_URL_ENV}; "
                      f"scripts/run-demo.sh starts one): {err}")
        self.assertIn(DEFAULT_MODEL, info.models, f"the server at {url} has no {DEFAULT_MODEL} model")
        model = info.models[DEFAULT_MODEL]
        self.assertTrue(model.ready, f"{DEFAULT_MODEL} is not loaded on the server: {model.error}")

        # 1. next case: a server CT loaded into the scene, with its image id remembered
        self.delayDisplay("Next case from active learning")
        sample = logic.nextSample()
        self.assertIsNotNone(sample, "the server has no unlabelled image left for the test")
        casePath = logic.downloadCase(sample.image_id)
        caseNode = logic.loadCaseVolume(casePath, sample.image_id)
        self.assertEqual(logic.knownImageId(caseNode), sample.image_id)
        with open(casePath, "rb") as handle:
            caseGeometry = nifti_geometry(handle.read())
        self.assertTrue(matrices_close(logic.ijkToRas(caseNode), caseGeometry.ijk_to_ras, 1e-3),
                        "Slicer and SlicerInsightLib place the downloaded CT differently")

        # 2. a CT volume node the server has never seen: the case's voxels on an oblique grid whose
        #    first axis points to the patient's left (RAS-flipped), so LPS/RAS mix-ups cannot pass
        angle = np.radians(20.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])
        spacing = np.array(caseGeometry.spacing)
        ijkToRas = np.eye(4)
        ijkToRas[:3, :3] = rotation @ np.diag(spacing)
        ijkToRas[:3, 3] = [40.0, -25.5, 112.25]
        voxels = slicer.util.arrayFromVolume(caseNode).copy()
        ctNode = slicer.util.addVolumeFromArray(voxels, ijkToRAS=slicer.util.vtkMatrixFromArray(ijkToRas),
                                                name="SlicerInsightTest CT")
        self.assertIsNone(logic.knownImageId(ctNode))

        # 3. analysis: upload, infer, heatmap node with colormap, threshold and overlay
        threshold, opacity = 0.3, 0.6
        self.delayDisplay("Analyze for PE (uploads the volume)")
        result, heatmapNode = logic.analyzeVolume(ctNode, DEFAULT_MODEL, threshold=threshold, opacity=opacity)
        imageId = logic.knownImageId(ctNode)
        self.assertTrue(imageId and logic.client.has_image(imageId), "the CT was not uploaded")
        self.assertTrue(0.0 <= result.pe_probability <= 1.0)
        self.assertEqual(result.model_version, model.model_version)
        self.assertIsNotNone(heatmapNode)
        self.assertTrue(heatmapNode.IsA("vtkMRMLScalarVolumeNode"))
        self.assertEqual(heatmapNode.GetAttribute(logic.ROLE_ATTRIBUTE), "heatmap")

        libGeometry = result.heatmap_geometry()
        heatmapMatrix = logic.ijkToRas(heatmapNode)
        self.assertTrue(matrices_close(heatmapMatrix, libGeometry.ijk_to_ras, 1e-3),
                        f"heatmap IJK-to-RAS in Slicer\n{heatmapMatrix}\ndiffers from SlicerInsightLib's\n"
                        f"{libGeometry.ijk_to_ras}")
        self.assertTrue(matrices_close(heatmapMatrix, ijkToRas, 1e-3), "the heatmap is not on the CT's grid")
        libValues, _ = result.heatmap_volume()
        nodeValues = slicer.util.arrayFromVolume(heatmapNode)
        self.assertEqual(nodeValues.shape, voxels.shape)
        self.assertTrue(np.allclose(nodeValues, libValues, atol=1e-6), "heatmap voxels differ from the file's")

        display = heatmapNode.GetDisplayNode()
        colorNode = display.GetColorNode()
        self.assertEqual(colorNode.GetName(), logic.COLOR_NODE_NAME)
        self.assertEqual(colorNode.GetNumberOfColors(), colormap.TABLE_SIZE)
        expected = colormap.colormap_rgba(threshold)
        for index in (0, colormap.threshold_index(threshold) - 1, colormap.threshold_index(threshold), 255):
            rgba = [0.0, 0.0, 0.0, 0.0]
            colorNode.GetColor(index, rgba)
            self.assertTrue(np.allclose(rgba, expected[index], atol=1e-6), f"color entry {index}: {rgba}")
        self.assertTrue(display.GetApplyThreshold())
        self.assertAlmostEqual(display.GetLowerThreshold(), threshold, places=5)
        self.assertAlmostEqual(display.GetWindow(), 1.0, places=5)
        self.assertAlmostEqual(display.GetLevel(), 0.5, places=5)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:  # views exist (not with --no-main-window)
            composite = layoutManager.sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
            self.assertEqual(composite.GetForegroundVolumeID(), heatmapNode.GetID())
            self.assertEqual(composite.GetBackgroundVolumeID(), ctNode.GetID())
            self.assertAlmostEqual(composite.GetForegroundOpacity(), opacity, places=5)
        logic.setHeatmapThreshold(heatmapNode, 0.6)
        self.assertAlmostEqual(display.GetLowerThreshold(), 0.6, places=5)
        rgba = [0.0, 0.0, 0.0, 0.0]
        colorNode.GetColor(colormap.threshold_index(0.6) - 1, rgba)
        self.assertEqual(rgba[3], 0.0, "the color table is not transparent below the new threshold")

        # 4. opacity and findings: the slice views jump to the location (RAS)
        target = result.findings[0].centroid_ras if result.findings else tuple(libGeometry.ijk_to_ras_points(
            np.array(libGeometry.size_ijk) / 2.0))
        if layoutManager is not None:
            logic.setOverlayOpacity(0.35)
            self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.35, places=5)
            logic.jumpToRas(target)
            redSlice = layoutManager.sliceWidget("Red").mrmlSliceNode()
            sliceToRas = slicer.util.arrayFromVTKMatrix(redSlice.GetSliceToRAS())
            distance = abs(np.dot(sliceToRas[:3, 2], np.array(target) - sliceToRas[:3, 3]))
            self.assertLess(distance, max(spacing) + 1e-3, "the red slice does not pass through the finding")
        else:
            logger.warning("no slice views (no main window): overlay layers, opacity and jump-to not checked")

        # 5. convert to segmentation (cut at half the heatmap's maximum: never empty when max > 0)
        self.assertGreater(float(libValues.max()), 0.0, "the heatmap is all zero: nothing to convert")
        cut = max(min(threshold, 0.5 * float(libValues.max())), 1e-4)
        self.delayDisplay(f"Convert to segmentation at {cut:.3f}")
        segmentationNode = logic.heatmapToSegmentation(heatmapNode, cut, ctNode)
        self.assertGreaterEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        mask = logic.segmentationMask(segmentationNode, ctNode)
        self.assertTrue(np.array_equal(mask, colormap.threshold_mask(libValues, cut)),
                        "the segment differs from the thresholded heatmap")
        self.assertGreater(int(mask.sum()), 0)

        # 6. export the label, submit it with provenance, read it back voxel by voxel
        self.delayDisplay("Submit the label")
        labelData, provenance, exported = logic.prepareLabel(ctNode, segmentationNode, "PE", "SlicerInsightTest",
                                                             imageId)
        self.assertEqual(provenance.method, "heatmap")
        self.assertEqual(provenance.model_version, result.model_version)
        receipt = logic.submitLabel(imageId, labelData, provenance)
        stored, storedGeometry = logic.downloadLabel(receipt.label_id)
        self.assertTrue(np.array_equal(stored, exported), "the label read back differs from the one submitted")
        self.assertTrue(matrices_close(storedGeometry.ijk_to_ras, ijkToRas, 1e-3))
        labelInfo = logic.client.label_info(receipt.label_id)
        self.assertEqual(labelInfo.get("annotator"), "SlicerInsightTest")
        self.assertEqual(labelInfo.get("scan_label"), "pe")
        self.assertEqual(labelInfo.get("model_version"), result.model_version)

        # the label, loaded by Slicer from the server's file, lies on the CT
        labelPath = os.path.join(logic.temporaryDirectory(), f"{imageId}_label_readback.nii.gz")
        with open(labelPath, "wb") as handle:
            handle.write(logic.client.download_label(receipt.label_id))
        labelNode = slicer.util.loadLabelVolume(labelPath)
        self.assertTrue(matrices_close(logic.ijkToRas(labelNode), ijkToRas, 1e-3))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(labelNode) > 0, exported > 0))

        # 7. training status is reported (this app has no trainer yet: "not_offered" with a message)
        status = logic.trainingStatus(DEFAULT_MODEL)
        self.assertTrue(status.message)
        self.delayDisplay("SlicerInsightTest passed")
