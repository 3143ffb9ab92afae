"""The same no-op workload for Conveyor, a pure-Python worker and the peers."""
