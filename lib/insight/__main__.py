"""``python -m insight`` runs the CLI."""

import sys

from insight.cli import main

sys.exit(main())
