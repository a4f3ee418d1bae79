"""Shipped recipes (YAML, one per model x method). Found through macfinetune.core.paths."""
