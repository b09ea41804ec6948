"""Simulated hosts (the datacenter issue)."""

from __future__ import annotations
