"""Volume I/O with geometry, and atomic writes."""

from insight.io.atomic import atomic_output, write_json_atomic, write_text_atomic
from insight.io.image_io import IMAGE_SUFFIXES, case_name, find_images, read_image, write_image

__all__ = ["atomic_output", "write_json_atomic", "write_text_atomic", "IMAGE_SUFFIXES", "case_name",
           "find_images", "read_image", "write_image"]
