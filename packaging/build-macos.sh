#!/usr/bin/env bash
# Build macfinetune.app and macfinetune-<version>.dmg on an Apple-silicon Mac, with one command:
#   bash packaging/build-macos.sh
# Signing and notarization run only when credentials are given:
#   MACFINETUNE_CODESIGN_IDENTITY="Developer ID Application: Name (TEAMID)"
#   MACFINETUNE_NOTARY_PROFILE=<a keychain profile made with `xcrun notarytool store-credentials`>
# The app's own --self-test runs from inside the built bundle before the .dmg is made; a failure stops here.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "$(uname -s)/$(uname -m)" == "Darwin/arm64" ]] || { echo "build-macos.sh runs on an Apple-silicon Mac" >&2; exit 2; }

PY=${PYTHON:-python3}
VENV=build/mac-venv
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q . "pyinstaller>=6.10"
VERSION=$("$VENV/bin/python" -c "import macfinetune; print(macfinetune.__version__)")

# LSMinimumSystemVersion = the floor of the mlx wheel actually installed (macosx_14_0_arm64 -> 14.0).
MIN_MACOS=$("$VENV/bin/python" packaging/mlx_floor.py)
echo "mlx wheel floor: macOS $MIN_MACOS"

# The icon: SVG source in resources/icon -> .iconset (Qt's renderer) -> .icns (iconutil).
rm -rf build/macfinetune.iconset && "$VENV/bin/python" packaging/make_icns.py build/macfinetune.iconset
iconutil -c icns build/macfinetune.iconset -o build/macfinetune.icns

rm -rf dist/macfinetune dist/macfinetune.app
MACFINETUNE_MIN_MACOS="$MIN_MACOS" MACFINETUNE_ICNS="$PWD/build/macfinetune.icns" \
  "$VENV/bin/pyinstaller" --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/macfinetune.spec

APP=dist/macfinetune.app
"$VENV/bin/python" packaging/check_bundle.py "$APP"          # one libmlx, its metallib beside it, no torch
"$APP/Contents/MacOS/macfinetune" --self-test                  # imports, model modules, Metal, train, generate

if [[ -n "${MACFINETUNE_CODESIGN_IDENTITY:-}" ]]; then
  codesign --force --deep --options runtime --timestamp --entitlements packaging/entitlements.plist \
    --sign "$MACFINETUNE_CODESIGN_IDENTITY" "$APP"
  codesign --verify --strict --deep --verbose=2 "$APP"
  "$APP/Contents/MacOS/macfinetune" --self-test                # signed + hardened runtime still runs MLX's JIT
fi

DMG="dist/macfinetune-$VERSION.dmg"
rm -f "$DMG"
STAGE=$(mktemp -d)
cp -R "$APP" "$STAGE/" && ln -s /Applications "$STAGE/Applications"
hdiutil create -volname "macfinetune $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
rm -rf "$STAGE"

if [[ -n "${MACFINETUNE_CODESIGN_IDENTITY:-}" && -n "${MACFINETUNE_NOTARY_PROFILE:-}" ]]; then
  codesign --sign "$MACFINETUNE_CODESIGN_IDENTITY" --timestamp "$DMG"
  xcrun notarytool submit "$DMG" --keychain-profile "$MACFINETUNE_NOTARY_PROFILE" --wait
  xcrun stapler staple "$DMG"
  xcrun stapler validate "$DMG"
fi
du -sh "$APP" "$DMG"
echo "built $DMG"
