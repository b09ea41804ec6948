"""Simulated backup storage (the datacenter issue)."""

from __future__ import annotations
