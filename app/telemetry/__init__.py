"""Telemetry: the metric catalog and the one API every process emits metrics through."""
