"""Management nodes: heartbeat rows and the node list (essential)."""
