"""The desktop app's widgets: a main window whose pages are built from ``pages.REGISTRY``."""
