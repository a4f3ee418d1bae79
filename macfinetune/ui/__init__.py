"""Widgets: render state, forward intent (see ../shared/STYLE.md, the ui layer)."""
