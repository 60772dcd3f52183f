"""A real Orthanc PACS with its DICOMweb plugin, started on a free loopback port for the tests.

Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``.ci/run`` installs them). The server gets
a temporary configuration: storage and index in a temporary folder, DICOMweb enabled at
``/dicom-web/``, the DICOM (DIMSE) server off, no authentication, remote access refused (Orthanc
has no bind-address option; with ``RemoteAccessAllowed: false`` it answers loopback clients only).
It runs as its own process group and is stopped at the end of the test session.

Use ``from tests.orthanc_fixture import orthanc_server`` in a test module; a machine without
Orthanc fails the tests with a message saying what to install (never a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.processes import log_tail, stop_process_group

#: Where Debian puts the Orthanc binary and the DICOMweb plugin.
ORTHANC_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                              "/usr/lib/orthanc/libOrthancDicomWeb.so")
INSTALL_HINT = ("Orthanc with its DICOMweb plugin is required for the DICOMweb tests: "
                "apt-get install -y --no-install-recommends orthanc orthanc-dicomweb (.ci/run does this)")
START_TIMEOUT_S = 30.0


@dataclass
class OrthancServer:
    """A running Orthanc: ``base_url`` is the REST root, ``dicomweb_url`` the DICOMweb root."""

    base_url: str
    workdir: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        stop_process_group(self.process)


def find_orthanc() -> tuple[str, str]:
    """Paths of the Orthanc binary and the DICOMweb plugin; fails the test when either is missing."""
    binary = shutil.which("Orthanc") or next((p for p in ORTHANC_BINARY_CANDIDATES if os.path.isfile(p)), None)
    plugin = next((p for p in DICOMWEB_PLUGIN_CANDIDATES if os.path.isfile(p)), None)
    if binary is None or plugin is None:
        pytest.fail(f"{'Orthanc' if binary is None else 'the Orthanc DICOMweb plugin'} not found. {INSTALL_HINT}",
                    pytrace=False)
    return binary, plugin


def start_orthanc(workdir: Path) -> OrthancServer:
    """Start Orthanc with a temporary configuration in ``workdir``; returns once DICOMweb answers."""
    binary, plugin = find_orthanc()
    port = free_loopback_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    config = {
        "Name": "INSIGHT_TEST",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False,
                     "Host": f"127.0.0.1:{port}"},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                               start_new_session=True)
    log.close()
    server = OrthancServer(base_url=f"http://127.0.0.1:{port}", workdir=workdir, process=process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with code {process.returncode} at start:\n{server.log_tail()}", pytrace=False)
        try:
            plugins = requests.get(f"{server.base_url}/plugins", timeout=2).json()
            if "dicom-web" in plugins:
                return server
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"Orthanc did not serve DICOMweb within {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[OrthancServer]:
    """An empty Orthanc with DICOMweb for the session (see the module docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="insight-orthanc-"))
    server = start_orthanc(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
