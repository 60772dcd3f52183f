"""Prepare scans and cache vessel_filters features (stride S) in 2 processes; same files weak.py reads."""
import sys, torch, multiprocessing as mp
from pathlib import Path
from insight.config import PreprocessConfig
from insight.training.dataset import read_label_table, prepare_cases
from insight.models.vessel_filters import VesselFilterEncoder
from insight.preprocessing import slice_stack
W = Path(__import__("os").environ.get("WORK", ".")); S = int(sys.argv[1]); tag = sys.argv[2]
def work(chunk):
    torch.set_num_threads(1)
    cs = prepare_cases(chunk, PreprocessConfig(), progress=False)
    enc = VesselFilterEncoder(3, 8, S)
    return cs, [enc.precompute(slice_stack(c.volume.float(), 1)).to(torch.float16) for c in cs]
if __name__ == "__main__":
    cases = read_label_table(f"/work/data/{tag}")
    half = len(cases) // 2
    with mp.get_context("fork").Pool(2) as pool:
        parts = pool.map(work, [cases[:half], cases[half:]])
    prep = parts[0][0] + parts[1][0]; feats = parts[0][1] + parts[1][1]
    torch.save(prep, W / f"{tag}.prep.pt")
    torch.save(feats, W / f"feat_vessel_filters_s{S}_{tag}.pt")
    print("done", len(prep))
