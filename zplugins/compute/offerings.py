"""Instance offerings: CPU and memory sizes for VMs (the datacenter issue)."""

from __future__ import annotations
