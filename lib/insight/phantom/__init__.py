"""Synthetic CTPA phantoms with known clot masks (results on phantoms are results on phantoms).

Public API::

    from insight.phantom import PhantomConfig, generate_case, write_dataset, render_preview
    case = generate_case(seed=0, index=3, config=PhantomConfig())
    case.image_hu      # int16 [z, y, x] HU; case.clot_mask / artery_mask / lung_mask: uint8 [z, y, x]
    case.to_sitk(case.clot_mask)   # SimpleITK image with the case geometry (LPS, mm)
"""

from insight.phantom.generator import (LABEL_COLUMNS, PhantomCase, PhantomConfig, case_name, generate_case,
                                       write_case, write_dataset)
from insight.phantom.preview import render_preview

__all__ = ["PhantomConfig", "PhantomCase", "generate_case", "write_case", "write_dataset", "render_preview",
           "case_name", "LABEL_COLUMNS"]
