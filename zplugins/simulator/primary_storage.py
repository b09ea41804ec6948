"""Simulated primary storage (the datacenter issue)."""

from __future__ import annotations
