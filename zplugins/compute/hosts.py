"""Hosts: added, connected, pinged, with CPU and memory capacity (the datacenter issue)."""

from __future__ import annotations
