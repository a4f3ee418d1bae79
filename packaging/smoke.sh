#!/usr/bin/env bash
# Build the one-folder bundle from packaging/macfinetune.spec on this machine (Linux or a Mac) and run it the
# way a user would: --self-test, the demo, and an offscreen screenshot of the Monitor with the demo run.
# Not part of CI (it takes minutes). Usage: bash packaging/smoke.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/smoke}
VENV=build/pack-venv
START=$(date +%s)
[[ -x "$VENV/bin/pyinstaller" ]] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q . "pyinstaller>=6.10"; }
"$VENV/bin/pip" install -q --no-deps --force-reinstall .        # the package as it is now, not an old copy
rm -rf dist/macfinetune build/pyinstaller "$OUT" && mkdir -p "$OUT"
"$VENV/bin/pyinstaller" --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/macfinetune.spec
BUILT=$(date +%s)
BIN=dist/macfinetune/macfinetune
"$VENV/bin/python" packaging/check_bundle.py dist/macfinetune | tee "$OUT/bundle.txt"
export MACFINETUNE_HOME="$PWD/$OUT/home" HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen
# run from an empty folder with a bare environment, as Finder would start it
(cd "$OUT" && env -i HOME="$HOME" MACFINETUNE_HOME="$MACFINETUNE_HOME" HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen \
  "$OLDPWD/$BIN" --self-test) | tee "$OUT/self-test.txt"
"$BIN" demo --out "$OUT/demo" | tail -n 12 | tee "$OUT/demo.txt"
"$BIN" --screenshot "$OUT/monitor.png" --page monitor
END=$(date +%s)
du -sh dist/macfinetune | tee -a "$OUT/bundle.txt"
echo "smoke: build $((BUILT - START)) s, runs $((END - BUILT)) s; screenshot $OUT/monitor.png"
