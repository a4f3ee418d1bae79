"""The Playground page: base and tuned side by side, streaming, multi-turn."""
