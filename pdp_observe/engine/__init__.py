"""Correlation with what the engine says: response telemetry, /metrics scrapes, OTLP spans."""
