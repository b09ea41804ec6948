"""Disk offerings: sizes of data volumes. (the datacenter issue)"""

from __future__ import annotations
