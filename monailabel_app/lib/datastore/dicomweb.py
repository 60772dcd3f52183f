"""The campaign datastore on a PACS: ``--studies http(s)://host/dicom-web`` (DICOMweb).

:class:`DicomWebCampaignDatastore` is MONAI Label 0.8.5's ``DICOMWebDatastore`` (images are the
PACS's series, listed by QIDO-RS with ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, default CT; each
series is fetched by WADO-RS on first use and cached as ``<cache>/<SeriesInstanceUID>/*.dcm`` plus
``<cache>/<SeriesInstanceUID>.nii.gz``) combined with :class:`lib.datastore.CampaignDatastore`
(label versions with provenance, atomic metadata, weak labels in the image infos). Image ids are
SeriesInstanceUIDs.

Why not MONAI Label's class as it is (what blocks it in this app, read in 0.8.5's code):

- ``MONAILabelApp._init_dicomweb_datastore`` first downloads dcmqi from GitHub into
  ``<app>/bin`` unless ``itkimage2segimage`` is installed (``_download_dcmqi_tools``, unguarded:
  offline, the server fails at start, and it writes into the repository), and saving a final label
  runs that binary (``nifti_to_dicom_seg(use_itk=True)``, hard-wired). Here the SEG is written with
  highdicom (as the reports' SEG): one segment per label value, frames at the source slices' own
  positions referencing their source instances, stored by STOW-RS into the series' study; a
  refusal (FailedSOPSequence) is an error and then nothing is saved.
- Its ``get_label_uri(id, "final")``, which ``GET /datastore/label`` calls with the image id,
  downloads that id's series (the image) into the label folder and decodes it as a SEG before
  looking for the cached label. Here the local label comes first; a SEG series is fetched only when
  named (training data) and decoded onto the cached image's own grid by frame position
  (:func:`insight.reports.seg_to_label_map`) instead of ``pydicom-seg``.
- Series are converted with ``insight.io.read_image`` (the app's own reader) and written atomically
  (MONAI Label left its temporary NIfTI in ``TMPDIR``); a half-downloaded series is never taken for a
  cached one (download into a staging folder, then rename).
- ``/datastore/?output=all`` lists every PACS series (MONAI Label listed only the cached ones), and
  ``has_image`` asks the PACS and fetches the series, so labels, weak labels and infos attach to a
  series nobody opened yet.

What works as with a local studies folder: inference by image id (QA reads the DICOM headers of
the cached series folder beside the NIfTI: true slice positions, modality, body part), labels with
versions and provenance (each final version is also a SEG series on the PACS), weak labels, leases,
scoring. What does not: adding images through the server (``PUT /datastore``: store the series on
the PACS instead); ``labels.csv`` import (there is no studies folder). Old SEG series stay on the
PACS (DICOMweb has no delete): every saved final version is one SEG series.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
import threading
import warnings
from typing import Any, Mapping, Sequence

import highdicom as hd
import numpy as np
import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore, DICOMwebClientX
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import ImageNotFoundException
from monailabel.utils.others.generic import md5_digest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from insight import __version__
from insight.errors import InputError, InsightError
from insight.io import read_image, write_image
from insight.reports.seg import SEG_SOP_CLASS_UID, load_source_series, order_on_grid, seg_to_label_map
from lib.datastore.campaign_datastore import CampaignDatastore, check_label_tag
from lib.datastore.provenance import LabelProvenance, utc_now_iso

__all__ = ["DicomWebCampaignDatastore", "make_dicomweb_client", "label_to_seg", "LABEL_SEG_SERIES_NUMBER",
           "DEFAULT_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: SeriesNumber of the label SEG series (the findings SEG of the reports is 901).
LABEL_SEG_SERIES_NUMBER = 902
#: Seconds one DICOMweb request may take (connect and each read).
DEFAULT_TIMEOUT_S = 120.0
#: Label geometry may differ from the image's by this much (NIfTI headers hold float32):
#: origin in voxels, spacing relative, direction cosines absolute.
ORIGIN_TOLERANCE_VOXELS = 0.05
SPACING_TOLERANCE = 1e-3
DIRECTION_TOLERANCE = 1e-3
#: Provenance method <-> DICOM SegmentAlgorithmType.
_ALGORITHM_TYPE = {"manual": "MANUAL", "edited": "SEMIAUTOMATIC", "pseudo": "AUTOMATIC"}
_METHOD_OF = {v: k for k, v in _ALGORITHM_TYPE.items()}
_PULMONARY_ARTERY = hd.sr.CodedConcept("81040000", "SCT", "Pulmonary artery")


class _TimeoutSession(requests.Session):
    """A requests session whose requests time out after ``timeout_s`` unless told otherwise."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)


def make_dicomweb_client(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DICOMwebClient:
    """MONAI Label's DICOMweb client for ``url`` (its QIDO/WADO/STOW prefixes and credentials from the
    settings), with a request timeout."""
    session = _TimeoutSession(timeout_s)
    username = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
    if username and password:
        session.auth = (username, password)
    return DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                           wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                           stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)


class DicomWebCampaignDatastore(DICOMWebDatastore, CampaignDatastore):
    """PACS series as images, campaign labels with history, final labels stored as DICOM SEG.

    Args:
        client: a DICOMweb client (:func:`make_dicomweb_client`).
        search_filter: QIDO-RS filter of the series that are images (e.g. ``{"Modality": "CT"}``).
        cache_path: folder for the local cache (one sub-folder per DICOMweb URL);
            None: ``~/.cache/monailabel/dicom``.
        fetch_by_frame: MONAI Label's frame-by-frame WADO-RS download (for servers that need it).
    """

    def __init__(self, client: DICOMwebClient, search_filter: Mapping[str, Any], cache_path: str | None = None,
                 fetch_by_frame: bool = False) -> None:
        root = cache_path or os.path.join(pathlib.Path.home(), ".cache", "monailabel", "dicom")
        os.makedirs(os.path.join(root, md5_digest(client.base_url)), exist_ok=True)  # CampaignDatastore's lock
        self._fetch_lock = threading.RLock()
        super().__init__(client=client, search_filter=dict(search_filter), cache_path=root,
                         fetch_by_frame=fetch_by_frame, convert_to_nifti=True)

    @classmethod
    def from_settings(cls, url: str) -> "DicomWebCampaignDatastore":
        """The datastore for ``--studies url`` with MONAI Label's DICOMweb settings."""
        cache = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
        if not settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI:
            logger.warning("MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false is ignored: series are cached as NIfTI "
                           "too (clients download images as files; labels are checked on the image's grid)")
        return cls(make_dicomweb_client(url), settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER, cache or None,
                   settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME)

    # -- which series are images ----------------------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        """True when the PACS lists series ``image_id``; the series is then fetched and cached (once), so
        that labels, weak labels and infos can be attached to it like to a local image."""
        return self._listed(image_id) and bool(self.get_image_uri(image_id))

    def _listed(self, image_id: str) -> bool:
        """Whether the PACS lists series ``image_id`` (the cached listing is refreshed once on a miss)."""
        if not image_id:
            return False
        if image_id in self.list_images():
            return True
        DICOMWebDatastore.list_images.cache_clear()  # a series stored on the PACS since the last listing
        return image_id in self.list_images()

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Series with a final label SEG on the PACS (each once); other tags: the local labels."""
        if label_tag not in (None, DefaultLabelTag.FINAL, DefaultLabelTag.FINAL.value):
            return CampaignDatastore.get_labeled_images(self, label_tag, labels)
        return sorted(set(DICOMWebDatastore.get_labeled_images(self)))  # cached; the PACS ignores the tag

    def json(self) -> dict[str, Any]:
        """MONAI Label's datastore JSON, with every PACS series (``"cached": false`` until fetched)."""
        data = CampaignDatastore.json(self)
        objects = data.setdefault("objects", {})
        for series in self.list_images():
            objects.setdefault(series, {"image": {"ext": "", "info": {"SeriesInstanceUID": series, "cached": False}},
                                        "labels": {}})
        return data

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        raise InputError(f"images of this server are the series of the PACS at {self._client.base_url}: store a "
                         "new series there (DICOMweb STOW-RS), not through the MONAI Label server")

    # -- images ---------------------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        """The cached NIfTI of series ``image_id`` (fetched and converted on first use).

        Raises:
            ImageNotFoundException: the PACS lists no such series.
            InputError: the series cannot be read as a 3D volume.
        """
        if not self._listed(image_id):
            raise ImageNotFoundException(f"series {image_id} is not on {self._client.base_url} "
                                         f"(or does not match the search filter {self._search_filter})")
        with self._fetch_lock:
            self._sync_from_disk()
            nifti = self._nifti_path(image_id)
            if image_id in self._datastore.objects and os.path.isfile(nifti):
                return nifti
            image = read_image(self._series_folder(image_id))
            with tempfile.TemporaryDirectory(prefix=".convert-", dir=self._datastore_path) as work:
                converted = write_image(image, os.path.join(work, f"{image_id}.nii.gz"))
                CampaignDatastore.add_image(self, image_id, str(converted), self._dicom_info(image_id))
            logger.info("series %s cached as %s", image_id, os.path.basename(nifti))
            return nifti

    def _nifti_path(self, image_id: str) -> str:
        return os.path.realpath(os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz"))

    def _series_folder(self, series_uid: str) -> str:
        """``<cache>/<series>/`` holding the series' files, downloaded whole or not at all."""
        folder = os.path.realpath(os.path.join(self._datastore.image_path(), series_uid))
        if os.path.isdir(folder) and os.listdir(folder):
            return folder
        staging = tempfile.mkdtemp(prefix=f".{series_uid}.", dir=self._datastore.image_path())
        try:
            dicom_web_download_series(None, series_uid, staging, self._client, self._fetch_by_frame)
            if os.path.isdir(folder):
                os.rmdir(folder)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    # -- labels ---------------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        """Save a label version; a final label is first stored on the PACS as a DICOM SEG.

        The SEG (one segment per label value, on the series' own slices) goes into the series'
        study; ``label_info`` records its ``SeriesInstanceUID``/``SOPInstanceUID``. When the PACS
        refuses it nothing is saved.

        Raises:
            ImageNotFoundException: no such series.
            InputError: a bad tag, or a label that is not on the image's grid.
            InsightError: the PACS refused the SEG or could not be reached.
        """
        check_label_tag(label_tag)
        image_uri = self.get_image_uri(image_id)
        info = dict(label_info or {})
        if label_tag == DefaultLabelTag.FINAL:
            provenance = info.get("provenance") if isinstance(info.get("provenance"), Mapping) else {}
            source = load_source_series(self._series_folder(image_id))
            seg = label_to_seg(sitk.ReadImage(label_filename), sitk.ReadImage(image_uri), source,
                               segment_names=_segment_names(info), provenance=provenance)
            self._store(seg)
            info.update(SeriesInstanceUID=str(seg.SeriesInstanceUID), SOPInstanceUID=str(seg.SOPInstanceUID),
                        StudyInstanceUID=str(seg.StudyInstanceUID), Modality="SEG",
                        pacs=self._client.base_url)
            DICOMWebDatastore.get_labeled_images.cache_clear()
        return CampaignDatastore.save_label(self, image_id, label_filename, label_tag, info)

    def _store(self, seg: Dataset) -> None:
        try:
            response = self._client.store_instances([seg])
        except requests.RequestException as err:
            raise InsightError(f"storing the label SEG on {self._client.base_url} failed: {err}") from err
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise InsightError(f"{self._client.base_url} refused the label SEG (DICOM failure reason "
                               f"{', '.join(reasons)})")
        logger.info("label SEG %s (series %s) stored on %s", seg.SOPInstanceUID, seg.SeriesInstanceUID,
                    self._client.base_url)

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The local label file; for a final label named by its SEG series (``label_id``) with
        ``image_id``, the SEG is fetched from the PACS and decoded onto the image once."""
        if label_tag != DefaultLabelTag.FINAL:
            self._sync_from_disk()
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        image_id = image_id or label_id
        self._sync_from_disk()
        local = LocalDatastore.get_label_uri(self, image_id, label_tag)
        if local and os.path.isfile(local):
            return local
        if label_id == image_id:
            return ""
        return self._import_seg(image_id, label_id)

    def _import_seg(self, image_id: str, seg_series: str) -> str:
        """Decode SEG series ``seg_series`` onto image ``image_id``'s grid and save it as its final label."""
        image_uri = self.get_image_uri(image_id)
        segs = [d for d in self._retrieve_series(seg_series) if str(d.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID]
        if not segs:
            logger.warning("series %s holds no DICOM SEG; label of %s not imported", seg_series, image_id)
            return ""
        try:
            label = seg_to_label_map(segs[0], sitk.ReadImage(image_uri))
        except InputError as err:
            logger.warning("SEG series %s not imported as the label of %s: %s", seg_series, image_id, err)
            return ""
        provenance = _provenance_of(segs[0])
        with tempfile.TemporaryDirectory(prefix=".import-", dir=self._datastore_path) as work:
            path = write_image(label, os.path.join(work, f"{image_id}.nii.gz"))
            info = {"SeriesInstanceUID": seg_series, "SOPInstanceUID": str(segs[0].SOPInstanceUID), "Modality": "SEG",
                    "pacs": self._client.base_url, "provenance": provenance.to_dict()}
            CampaignDatastore.save_label(self, image_id, str(path), DefaultLabelTag.FINAL, info)
        logger.info("final label of %s imported from SEG series %s", image_id, seg_series)
        return LocalDatastore.get_label_uri(self, image_id, DefaultLabelTag.FINAL)

    def _retrieve_series(self, series_uid: str) -> list[Dataset]:
        """All instances of a series (its study found by QIDO-RS), in memory."""
        found = self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}) or []
        studies = {str(Dataset.from_json(item).StudyInstanceUID) for item in found}
        return [d for study in sorted(studies) for d in self._client.retrieve_series(study, series_uid)]

    def _download_labeled_data(self) -> None:
        """Fetch every (series, SEG) pair the PACS holds; local final labels without a SEG on the
        PACS are archived into the label history (MONAI Label deleted their files)."""
        pairs = self._pacs_label_pairs()
        on_pacs = {image for image, _ in pairs}
        for image in set(CampaignDatastore.get_labeled_images(self, DefaultLabelTag.FINAL)) - on_pacs:
            logger.info("final label of %s has no SEG on the PACS: archived into the history", image)
            self.remove_label(image, DefaultLabelTag.FINAL)
        for image, seg_series in pairs:
            self.get_label_uri(seg_series, DefaultLabelTag.FINAL, image_id=image)

    def _pacs_label_pairs(self) -> list[tuple[str, str]]:
        """(image series, SEG series) for every SEG on the PACS that references a listed image."""
        images = set(self.list_images())
        pairs = []
        for item in self._client.search_for_series(search_filters={"Modality": "SEG"}) or []:
            seg = Dataset.from_json(item)
            meta = self._client.retrieve_series_metadata(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID))
            referenced = Dataset.from_json(meta[0]).get("ReferencedSeriesSequence") if meta else None
            image = str(referenced[0].SeriesInstanceUID) if referenced else None
            if image in images:
                pairs.append((image, str(seg.SeriesInstanceUID)))
        return pairs


def label_to_seg(label: sitk.Image, grid: sitk.Image, source: Sequence[Dataset],
                 segment_names: Mapping[int, str] | None = None,
                 provenance: Mapping[str, Any] | None = None) -> Dataset:
    """A BINARY DICOM SEG of a label map on ``grid``, referencing the ``source`` series.

    Args:
        label: integer label map ([z, y, x] as its numpy view), same size as ``grid`` and on the same
            grid within float32 header precision; 0 is background, each other value one segment.
        grid: the image the label was drawn on (its geometry; the cached series).
        source: the source series' headers (:func:`insight.reports.load_source_series`); each must lie
            on one slice of ``grid``.
        segment_names: label value -> segment label (default ``label <value>``).
        provenance: the label's provenance (:mod:`lib.datastore.provenance`): ``method`` gives the
            SegmentAlgorithmType (manual MANUAL, edited SEMIAUTOMATIC, pseudo AUTOMATIC), ``model`` and
            ``model_version`` the algorithm, ``saved_by`` the ContentCreatorName.

    Returns:
        The SEG: same patient and study as ``source``, a new series, segments numbered 1..n in the
        order of the label values (value v of the k-th smallest value is segment k; segment number
        equals the value when the values are 1..n); frames for every slice with a voxel (for an empty
        label: every slice of segment 1, all empty).

    Raises:
        InputError: a label that is not a 3D integer map on ``grid``, negative values, or source
            images off the grid.
    """
    _check_on_grid(label, grid)
    array = sitk.GetArrayFromImage(label)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError("a label must hold whole numbers (0 background, 1.. segments)")
        array = array.astype(np.int64)
    if array.min() < 0:
        raise InputError(f"a label must not hold negative values (found {int(array.min())})")
    values = [int(v) for v in np.unique(array) if v != 0] or [1]
    pixels = np.zeros(array.shape, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        pixels[array == value] = number
    ordered = order_on_grid(grid, source)
    provenance = dict(provenance or {})
    algorithm_type = _ALGORITHM_TYPE.get(str(provenance.get("method")), "MANUAL")
    algorithm = None
    if algorithm_type != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(
            name=str(provenance.get("model") or "SlicerInsight")[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=str(provenance.get("model_version") or __version__)[:64])
    names = segment_names or {}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(names.get(value) or f"label {value}")[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Embolus, algorithm_type=algorithm_type,
            algorithm_identification=algorithm, anatomic_regions=[_PULMONARY_ARTERY],
            tracking_uid=generate_uid(), tracking_id=f"label value {value}")
        for number, value in enumerate(values, start=1)]
    creator = str(provenance.get("saved_by") or "")[:64] or None
    with warnings.catch_warnings():
        # user names ("reader-1") and de-identified PatientNames have a single PN component: kept as is
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        return hd.seg.Segmentation(
            source_images=ordered, pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=generate_uid(),
            series_number=LABEL_SEG_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="SlicerInsight", manufacturer_model_name="insight", software_versions=__version__,
            device_serial_number="0", content_label="LABEL", content_creator_name=creator,
            content_description=f"SlicerInsight label ({provenance.get('method') or 'manual'})"[:64],
            series_description="SlicerInsight label", omit_empty_frames=bool(pixels.any()))


def _check_on_grid(label: sitk.Image, grid: sitk.Image) -> None:
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a label must be a 3D scalar image")
    if label.GetSize() != grid.GetSize():
        raise InputError(f"the label has size {list(label.GetSize())}, the image {list(grid.GetSize())}: a label "
                         "must be on the image's grid")
    spacing = np.asarray(grid.GetSpacing())
    if not np.allclose(label.GetSpacing(), spacing, rtol=SPACING_TOLERANCE, atol=0):
        raise InputError(f"the label's spacing {label.GetSpacing()} differs from the image's {tuple(spacing)}")
    if not np.allclose(label.GetDirection(), grid.GetDirection(), atol=DIRECTION_TOLERANCE, rtol=0):
        raise InputError("the label's orientation differs from the image's")
    offset = np.asarray(grid.TransformPhysicalPointToContinuousIndex(label.GetOrigin()))
    if np.abs(offset).max() > ORIGIN_TOLERANCE_VOXELS:
        raise InputError(f"the label's origin is {np.round(offset, 3).tolist()} voxels from the image's")


def _segment_names(label_info: Mapping[str, Any]) -> dict[int, str]:
    """Label value -> name from MONAI Label's ``label_info`` list (``[{"name": .., "idx": ..}]``) or a
    ``label_names`` map (``{"pe": 1}``) in the save request's params."""
    names: dict[int, str] = {}
    items = label_info.get("label_info")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and isinstance(item.get("idx"), int) and item.get("name"):
                names[item["idx"]] = str(item["name"])
    mapping = label_info.get("label_names")
    if isinstance(mapping, Mapping):
        names.update({int(v): str(k) for k, v in mapping.items() if isinstance(v, int)})
    return names


def _provenance_of(seg: Dataset) -> LabelProvenance:
    """Provenance of a label imported from a SEG on the PACS (its first segment's algorithm)."""
    segment = seg.SegmentSequence[0]
    method = _METHOD_OF.get(str(segment.get("SegmentAlgorithmType", "")), "manual")
    algorithm = (segment.get("SegmentationAlgorithmIdentificationSequence") or [None])[0]
    version = str(algorithm.get("AlgorithmVersion")) if algorithm is not None else None
    if method in ("pseudo", "edited") and not version:
        method = "manual"
    return LabelProvenance(saved_by=str(seg.get("ContentCreatorName") or "") or "pacs", saved_at=utc_now_iso(),
                           method=method, model_version=version if method != "manual" else None,
                           model=str(algorithm.get("AlgorithmName")) if algorithm is not None and method != "manual"
                           else None)


