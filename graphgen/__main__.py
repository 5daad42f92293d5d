"""``python -m graphgen`` runs the command line."""

import sys

from graphgen.cli import main

sys.exit(main())
