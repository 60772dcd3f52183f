"""Task configs: where each task's model comes from and how it is set up (read once, at startup)."""
