from __future__ import annotations

import sys

from graphgen_server.cli import main

sys.exit(main())
