"""Shared pytest fixtures: a real MONAI Label server running the SlicerInsight app.

The server is started as a subprocess exactly as users start it (``python -m monailabel.main
start_server --app monailabel_app ... --host 127.0.0.1``), once per test session and per
(studies, model, conf) combination, on a free loopback port. It serves a *copy* of the studies
folder in a temporary directory (MONAI Label writes datastore files and labels next to the studies;
the repository's ``sample-data`` is never written by tests), logs to that temporary directory, and
gets its own ``TMPDIR`` there, so tests can check that no result or upload file is left behind.

Fixtures:

- ``monailabel_server_factory``: ``factory(studies_dir, model_path, conf=None) -> MonaiLabelServer``;
  servers are cached for the session and stopped (whole process group) at its end.
- ``monailabel_server``: the standard server: shipped demo model on the sample studies.
- ``demo_model_path`` / ``sample_studies_dir``: the shipped files; a missing one fails the test
  with a message saying what to create (never a skip).

Helpers (import with ``from tests.conftest import ...``): :func:`parse_infer_multipart` splits
MONAI Label's multipart /infer answer into its JSON ``params`` and image bytes;
:func:`read_image_bytes` turns image bytes into a SimpleITK image.

Development only: ``INSIGHT_TEST_MODEL_PATH`` / ``INSIGHT_TEST_STUDIES`` point the standard
fixtures at another checkpoint / studies folder (e.g. before the demo model is trained).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.processes import log_tail, stop_process_group

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "monailabel_app"
DEMO_MODEL_PATH = REPO / "sample-data" / "models" / "pe_insight_demo.pt"
SAMPLE_STUDIES_DIR = REPO / "sample-data" / "studies"
#: Seconds a server gets to answer /info after start (imports, datastore scan, model load).
SERVER_START_TIMEOUT_S = 120.0
#: Runtime files MONAI Label keeps in a studies folder; not copied into a test server's studies.
STUDIES_RUNTIME_FILES = (".lock", "datastore_v2.json", "labels", ".monailabel", ".insight")


@dataclass
class MonaiLabelServer:
    """A running ``monailabel start_server`` subprocess.

    Attributes:
        base_url: ``http://127.0.0.1:<port>`` (no trailing slash).
        studies_dir: the (temporary copy of the) studies folder it serves; for a DICOMweb URL, the
            datastore's cache folder.
        model_path: the checkpoint passed as ``--conf model_path``.
        workdir: temporary folder with the server's logs and its ``TMPDIR`` (``tmp/``).
        process: the server process (leader of its own process group).
    """

    base_url: str
    studies_dir: Path
    model_path: Path | None
    workdir: Path
    process: subprocess.Popen = field(repr=False)
    command: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def log_path(self) -> Path:
        """stdout and stderr of the server (MONAI Label's own log lines included)."""
        return self.workdir / "server.log"

    @property
    def tmp_dir(self) -> Path:
        """The server's ``TMPDIR``: uploads and result files live here while a request runs."""
        return self.workdir / "tmp"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def leftover_temp_files(self, wait_s: float = 10.0) -> list[Path]:
        """Files still in the server's ``TMPDIR`` after waiting up to ``wait_s`` for them to go.

        MONAI Label removes uploads and result files in background tasks after the answer is sent.
        """
        leftovers: list[Path] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            leftovers = [p for p in self.tmp_dir.rglob("*") if p.is_file()]
            if not leftovers:
                break
            time.sleep(0.5)
        return leftovers

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        return log_tail(self.log_path, lines, "(no server log)")

    def info(self, timeout: float = 10.0) -> dict[str, Any]:
        """GET /info/ as a dict (raises for an HTTP error)."""
        response = requests.get(self.url("/info/"), timeout=timeout)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        """Terminate the server's whole process group (SIGTERM, then SIGKILL after 20 s)."""
        stop_process_group(self.process)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_log_config(log_file: Path, config_path: Path) -> Path:
    """MONAI Label's own logging.json, writing its log file into the test's folder (not the app dir)."""
    import monailabel

    default = Path(monailabel.__file__).resolve().parent / "logging.json"
    if default.is_file():
        text = default.read_text(encoding="utf-8")
        text = text.replace("${LOGDIR}", json.dumps(str(log_file.parent))[1:-1])
        text = text.replace("${LOGFILE}", json.dumps(str(log_file))[1:-1])
        config_path.write_text(text, encoding="utf-8")
    else:  # a minimal console-only config
        config_path.write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"simple": {"format": "[%(asctime)s] [%(threadName)s] [%(levelname)s] (%(name)s) - %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple"}},
            "root": {"level": "INFO", "handlers": ["console"]},
        }), encoding="utf-8")
    return config_path


class MonaiLabelServerFactory:
    """Starts (and caches for the session) real MONAI Label servers running ``monailabel_app``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._servers: dict[tuple, MonaiLabelServer] = {}

    def __call__(self, studies_dir: str | os.PathLike, model_path: str | os.PathLike | None,
                 conf: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 timeout_s: float = SERVER_START_TIMEOUT_S) -> MonaiLabelServer:
        """A running server for ``studies_dir`` (copied) and ``model_path`` (``--conf model_path``).

        ``conf`` adds ``--conf KEY VALUE`` pairs, ``env`` environment variables. The same arguments
        give the same (already running) server. ``studies_dir`` may also be a DICOMweb URL
        (``http://127.0.0.1:PORT/dicom-web``): passed as is, with the datastore's cache
        (``MONAI_LABEL_DATASTORE_CACHE_PATH``, then ``server.studies_dir``) and ``--conf model_dir``
        in the server's temporary folder unless ``env``/``conf`` name them.
        """
        studies = _studies_argument(studies_dir)
        model = Path(model_path).resolve() if model_path is not None else None
        key = (str(studies), str(model), tuple(sorted((conf or {}).items())), tuple(sorted((env or {}).items())))
        server = self._servers.get(key)
        if server is not None and server.is_running():
            return server
        server = self._start(studies, model, conf or {}, env or {}, timeout_s)
        self._servers[key] = server
        return server

    def _start(self, studies: Path | str, model: Path | None, conf: dict[str, str], env: dict[str, str],
               timeout_s: float) -> MonaiLabelServer:
        remote = isinstance(studies, str)
        if not remote and not studies.is_dir():
            pytest.fail(f"studies folder not found: {studies}")
        workdir = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        if remote:  # a DICOMweb URL: nothing to copy; cache and model folder in workdir
            studies_copy = workdir / "dicomweb-cache"
            env = {"MONAI_LABEL_DATASTORE_CACHE_PATH": str(studies_copy), **env}
            conf = {"model_dir": str(workdir / "model"), **conf}
        else:
            studies_copy = workdir / "studies"
            shutil.copytree(studies, studies_copy, ignore=shutil.ignore_patterns(*STUDIES_RUNTIME_FILES))
        (workdir / "tmp").mkdir()
        log_config = _write_log_config(workdir / "app.log", workdir / "logging.json")

        port = _free_loopback_port()
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
                   "--studies", studies if remote else str(studies_copy), "--host", "127.0.0.1", "--port", str(port),
                   "--log_config", str(log_config)]
        if model is not None:
            command += ["--conf", "model_path", str(model)]
        for key, value in conf.items():
            command += ["--conf", key, str(value)]
        process_env = {**os.environ, "TMPDIR": str(workdir / "tmp"), "PYTHONUNBUFFERED": "1", **env}
        process = self._launch(command, process_env, workdir / "server.log", "wb")
        server = MonaiLabelServer(f"http://127.0.0.1:{port}", studies_copy, model, workdir, process, command, process_env)
        self._wait_until_up(server, timeout_s)
        return server

    def restart(self, server: MonaiLabelServer, timeout_s: float = SERVER_START_TIMEOUT_S) -> MonaiLabelServer:
        """Stop ``server`` and start it again, same command, port and studies folder (as a site
        administrator restarts it); the log continues in the same file. Returns the same object."""
        server.stop()
        server.process = self._launch(server.command, server.env, server.log_path, "ab")
        self._wait_until_up(server, timeout_s)
        return server

    @staticmethod
    def _launch(command: list[str], env: dict[str, str], log_path: Path, mode: str) -> subprocess.Popen:
        log = log_path.open(mode)
        try:
            return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    @staticmethod
    def _wait_until_up(server: MonaiLabelServer, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not server.is_running():
                pytest.fail(f"MONAI Label server exited with code {server.process.returncode} before answering "
                            f"/info; last log lines:\n{server.log_tail()}")
            try:
                response = requests.get(server.url("/info/"), timeout=5)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as err:
                last_error = type(err).__name__
            time.sleep(0.5)
        server.stop()
        pytest.fail(f"MONAI Label server did not answer /info within {timeout_s:.0f} s ({last_error}); "
                    f"last log lines:\n{server.log_tail()}")

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def _studies_argument(studies_dir: str | os.PathLike) -> Path | str:
    """A studies folder as a resolved path, or a DICOMweb URL (``http(s)://...``) as a string."""
    if isinstance(studies_dir, str) and studies_dir.startswith(("http://", "https://")):
        return studies_dir.rstrip("/")
    return Path(studies_dir).resolve()


@pytest.fixture(scope="session")
def monailabel_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonaiLabelServerFactory]:
    factory = MonaiLabelServerFactory(tmp_path_factory.mktemp("monailabel"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The shipped demo checkpoint (``INSIGHT_TEST_MODEL_PATH`` overrides it during development)."""
    path = Path(os.environ.get("INSIGHT_TEST_MODEL_PATH") or DEMO_MODEL_PATH)
    if not path.is_file():
        pytest.fail(f"demo model not found: {path}. The repository ships it as "
                    f"sample-data/models/pe_insight_demo.pt (trained on the sample phantoms).")
    return path


@pytest.fixture(scope="session")
def sample_studies_dir() -> Path:
    """The shipped sample studies (``INSIGHT_TEST_STUDIES`` overrides it during development)."""
    path = Path(os.environ.get("INSIGHT_TEST_STUDIES") or SAMPLE_STUDIES_DIR)
    if not (path / "labels.csv").is_file():
        pytest.fail(f"sample studies not found: {path} must hold the phantom volumes and labels.csv "
                    f"(columns image, pe).")
    return path


@pytest.fixture(scope="session")
def monailabel_server(monailabel_server_factory: MonaiLabelServerFactory, sample_studies_dir: Path,
                      demo_model_path: Path) -> MonaiLabelServer:
    """The standard server: the shipped demo model serving a copy of the sample studies."""
    return monailabel_server_factory(sample_studies_dir, demo_model_path)


@dataclass
class InferAnswer:
    """MONAI Label's /infer answer, split: the JSON ``params`` and the result image, if any."""

    params: dict[str, Any]
    image: bytes | None
    image_filename: str | None


def parse_infer_multipart(response: requests.Response) -> InferAnswer:
    """Split an /infer response (multipart ``params`` + ``image`` for ``output=all``; plain JSON when
    the server had no image to send) into an :class:`InferAnswer`."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        return InferAnswer(response.json(), None, None)
    if not content_type.startswith("multipart/"):
        raise ValueError(f"not a multipart /infer answer: content-type {content_type!r}")
    params: dict[str, Any] = {}
    image = filename = None
    for part in MultipartDecoder.from_response(response).parts:
        disposition = part.headers.get(b"Content-Disposition", b"").decode("utf-8", "replace")
        fields = dict(_disposition_fields(disposition))
        if fields.get("name") == "params":
            params = json.loads(part.content.decode("utf-8"))
        elif fields.get("name") == "image":
            image, filename = part.content, fields.get("filename")
    return InferAnswer(params, image, filename)


def _disposition_fields(disposition: str) -> Iterator[tuple[str, str]]:
    for item in disposition.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        yield key.strip(), value.strip().strip('"')


def read_image_bytes(data: bytes, suffix: str = ".nii.gz"):
    """A SimpleITK image from file bytes (written to a temporary file with ``suffix`` first)."""
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)
        return sitk.ReadImage(str(path))
