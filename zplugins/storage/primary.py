"""Primary storage: where volumes live, attached to clusters. (the datacenter issue)"""

from __future__ import annotations
