"""``python -m zkvmagent --config PATH``."""

from __future__ import annotations

import sys

from zkvmagent.main import main

sys.exit(main())
