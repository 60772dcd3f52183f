"""Helpers for the real servers the tests start as subprocesses (MONAI Label, Orthanc)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

__all__ = ["stop_process_group", "log_tail"]


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Terminate ``process``'s whole process group: SIGTERM, then SIGKILL after ``grace_s`` seconds.

    The process must lead its own group (started with ``start_new_session=True``).
    """
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def log_tail(path: Path, lines: int, missing: str = "(no log)") -> str:
    """The last ``lines`` lines of a log file, or ``missing`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return missing
    return "\n".join(text.splitlines()[-lines:])
