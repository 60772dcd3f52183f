"""App-local code of the SlicerInsight MONAI Label app (imported as ``lib``, the MONAI Label sample-app layout)."""
