"""Changes to the MONAI Label server itself (routes), applied when the app starts in server mode."""
