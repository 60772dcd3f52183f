"""DICOMweb: a PACS as the source of studies and the destination of findings.

:class:`~insight.dicomweb.client.PacsClient` finds a study's series (QIDO-RS), fetches them
(WADO-RS) and stores instances (STOW-RS); :func:`~insight.dicomweb.analyze.analyze_study` runs the
analysis on a study's CT series and stores the findings back as a DICOM SEG
(``insight dicomweb analyze --url URL --study UID --store``). Tested against Orthanc with its
DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``) on loopback.
"""

from insight.dicomweb.analyze import StudyAnalysis, analyze_study
from insight.dicomweb.client import PacsClient, SeriesInfo

__all__ = ["PacsClient", "SeriesInfo", "StudyAnalysis", "analyze_study"]
