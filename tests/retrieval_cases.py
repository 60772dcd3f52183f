"""Small studies shared by test_retrieval, test_triage and test_ood (no fixtures here: plain builders).

Phantoms are written once per pytest session under the session's base temporary folder, and
embeddings are computed once per process, so the three test files pay for them once; the server
studies folder has a fixed path there too, so the conftest factory serves one server to both route
tests. Results on phantoms are results on phantoms.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from insight.embeddings import CaseEmbedder
from insight.io import read_image, write_image
from insight.phantom import PhantomConfig, write_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "sample-data" / "models" / "pe_insight_demo.pt"
REAL_CT_QA = REPO / "tests" / "data" / "real-ct-qa"
#: Small phantoms on the model's own grid (2.5 x 2.5 x 3 mm): 64 x 64 x 40 voxels, about 1 s to embed.
SMALL_PHANTOM = PhantomConfig(shape_xyz=(64, 64, 40), spacing_xyz=(2.5, 2.5, 3.0))
PHANTOM_SEED = 900
N_PHANTOMS = 12
#: Server conf for the route tests: no scoring pass at start (it would compete for the 2 cores).
SERVER_CONF = {"auto_scoring": "false"}
#: Image id of the contrast-free study in :func:`server_studies` (QA: not_ctpa).
NON_CONTRAST_ID = "noncontrast_0003"


def small_phantoms(base: Path) -> list[Path]:
    """The :data:`N_PHANTOMS` small phantoms (with labels.csv) in ``base/insight-small-phantoms``, sorted."""
    folder = base / "insight-small-phantoms"
    if not (folder / "labels.csv").is_file():  # written last by write_dataset
        write_dataset(folder, N_PHANTOMS, PHANTOM_SEED, SMALL_PHANTOM, progress=False)
    return sorted(folder.glob("*.nii.gz"))


@functools.lru_cache(maxsize=1)
def demo_embedder() -> CaseEmbedder:
    return CaseEmbedder.from_checkpoint(DEMO_MODEL, "cpu")


@functools.lru_cache(maxsize=None)
def embedding_of(path: str) -> np.ndarray:
    """The demo model's embedding of an image file (cached per process)."""
    return demo_embedder().embed_file(path).vector


def without_contrast(image: sitk.Image) -> sitk.Image:
    """A contrast-free copy: every voxel above 150 HU set to 40 HU (blood without contrast)."""
    array = sitk.GetArrayFromImage(image)
    out = sitk.GetImageFromArray(np.where(array > 150, 40, array).astype(array.dtype))
    out.CopyInformation(image)
    return out


def with_noise(image: sitk.Image, sd_hu: float = 20.0, seed: int = 1) -> sitk.Image:
    """A near-duplicate: the same volume plus Gaussian noise of ``sd_hu``."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    noisy = array + np.random.default_rng(seed).normal(0.0, sd_hu, array.shape).astype(np.float32)
    out = sitk.GetImageFromArray(np.round(noisy).astype(np.int16))
    out.CopyInformation(image)
    return out


def server_studies(base: Path) -> Path:
    """Studies for the route tests: phantoms 0-2 with their labels, and a contrast-free phantom 3."""
    folder = base / "insight-server-studies"
    if (folder / "labels.csv").is_file():
        return folder
    phantoms = small_phantoms(base)
    folder.mkdir(parents=True, exist_ok=True)
    for path in phantoms[:3]:
        shutil.copy2(path, folder / path.name)
    write_image(without_contrast(read_image(phantoms[3])), folder / f"{NON_CONTRAST_ID}.nii.gz")
    lines = (phantoms[0].parent / "labels.csv").read_text(encoding="utf-8").splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in {p.name[:-7] for p in phantoms[:3]}]
    (folder / "labels.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return folder
