from __future__ import annotations

import sys

from graphgen_client.cli import main

sys.exit(main())
