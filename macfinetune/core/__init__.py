"""Pure-Python decisions: recipes, run layout, events, problems. No Qt, no MLX."""
