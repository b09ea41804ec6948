"""Backup storage: where images live, attached to zones. (the datacenter issue)"""

from __future__ import annotations
