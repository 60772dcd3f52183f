"""Count clot-range (20-90 HU) voxels inside the artery mask but outside every clot, per scan (uses the masks).

    python artery_partial_volume.py FOLDER [N]     # FOLDER: an `insight phantom` output folder
"""
import csv
import sys

import numpy as np
import SimpleITK as sitk

root, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
for row in list(csv.DictReader(open(f"{root}/labels.csv")))[:n]:
    name = row["image"]
    hu = sitk.GetArrayFromImage(sitk.ReadImage(f"{root}/{name}.nii.gz")).astype(float)
    clot = sitk.GetArrayFromImage(sitk.ReadImage(f"{root}/truth/{name}_clot.nii.gz")) > 0
    artery = sitk.GetArrayFromImage(sitk.ReadImage(f"{root}/truth/{name}_artery.nii.gz")) > 0
    clot_range = (hu >= 20) & (hu <= 90)
    print(name, "pe", row["pe"], "artery voxels", int(artery.sum()),
          "artery voxels outside clot at 20-90 HU", int((artery & ~clot & clot_range).sum()),
          "clot voxels", int(clot.sum()), "clot voxels at 20-90 HU", int((clot & clot_range).sum()),
          "artery voxels > 250 HU", int((artery & (hu > 250)).sum()))
