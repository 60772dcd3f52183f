import sys, torch, numpy as np, SimpleITK as sitk
from pathlib import Path
from insight.models.checkpoint import load_checkpoint
from insight.training import prepare_cases, read_label_table
torch.set_num_threads(1)
ck = sys.argv[1]; root = Path(sys.argv[2])
loaded = load_checkpoint(ck)
model = loaded.model.eval(); cfg = loaded.config
from insight.training.trainer import slice_stack
cases = read_label_table(root)[:8]
prep = prepare_cases(cases, cfg.preprocess, False)
if len(sys.argv) > 3 and sys.argv[3] == "soft":  # as easy_large.py's "soft" variant: no aerated lung
    for p in prep:
        p.region = p.region & (p.volume > 0)
for c, p in zip(cases, prep):
    x = slice_stack(p.volume.float(), cfg.preprocess.slice_context)
    with torch.no_grad():
        out = model(x, region=p.region)
        pre = model.encoder.precompute(x) if model.supports_precompute else x[:, :, ::model.stride, ::model.stride]
    h = out.heatmap[:, 0]
    idx = np.unravel_index(int(h.argmax()), h.shape)
    hvals = h[h > 0]
    print(c.name, c.label, "p=%.4f" % float(out.probability), "hmax=%.4f" % float(h.max()), "argmax(z,y,x)=", idx, "shape", tuple(h.shape),
          "H quantiles", [round(float(q), 4) for q in torch.quantile(hvals.float()[:100000], torch.tensor([0.5, 0.99, 0.999]))],
          "feat@argmax", [round(float(v), 2) for v in pre[idx[0], :, idx[1], idx[2]][:8]])
