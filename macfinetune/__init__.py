"""macfinetune: fine-tune LLMs on Apple silicon with MLX."""

__version__ = "0.1.0"
