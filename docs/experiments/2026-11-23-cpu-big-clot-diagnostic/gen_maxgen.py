"""Default phantoms except the arterial/venous trees stop at generation 3 (no sub-segmental vessels)."""
import sys
from pathlib import Path
from insight.phantom import PhantomConfig, write_dataset
root, name, n, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
write_dataset(root / name, n, seed, PhantomConfig(max_generation=int(sys.argv[5])), progress=False)
