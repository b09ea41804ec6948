"""Images: downloaded to backup storage, with progress. (the datacenter issue)"""

from __future__ import annotations
