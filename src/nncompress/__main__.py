"""``python -m nncompress`` runs the command line."""

from __future__ import annotations

import sys

from nncompress.cli import main

sys.exit(main())
