"""Render resources/icon/macfinetune.svg to an .iconset (every size macOS asks for) with Qt's SVG renderer;
build-macos.sh then runs ``iconutil -c icns`` on it. Usage: make_icns.py OUT.iconset [PREVIEW.png]"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

SOURCE = Path(__file__).resolve().parent.parent / "resources" / "icon" / "macfinetune.svg"
SIZES = (16, 32, 128, 256, 512)


def render(renderer: QSvgRenderer, size: int, out: Path) -> None:
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out)):
        raise SystemExit(f"could not write {out}")


def main(iconset: Path, preview: Path | None = None) -> None:
    _app = QGuiApplication([])
    renderer = QSvgRenderer(str(SOURCE))
    if not renderer.isValid():
        raise SystemExit(f"{SOURCE}: not a valid SVG")
    iconset.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        render(renderer, size, iconset / f"icon_{size}x{size}.png")
        render(renderer, size * 2, iconset / f"icon_{size}x{size}@2x.png")
    if preview:
        render(renderer, 256, preview)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
