"""The only layer that imports mlx and mlx_lm. Reports through an ``emit`` callable; never prints."""
