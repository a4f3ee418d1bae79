"""Shipped runtime files (sample data, tables). Found through macfinetune.core.paths."""
