"""Prometheus metrics of the node (optional)."""
