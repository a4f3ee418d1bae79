"""Screenshots of every wizard step, light and dark, for docs/wizard.md and for looking at.

    QT_QPA_PLATFORM=offscreen python tests/ui/wizard/shots.py OUT_DIR [--rows 100000] [--quick]

Builds the tiny model offline, a "Qwen3-1.7B" folder (its published config.json, the tiny model's
tokenizer, no weights) so the estimates are those of a real model, a refused pickle-only model
with a long name, and a chat dataset of ``--rows`` rows; then opens the wizard at a fixed size
(Fusion style) and grabs each step: model (and the empty model list), data, method, settings
(with a wrong value), review (fits) and review (will not fit, Auto-fit offered).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
SIZE = (1180, 820)
LONG_NAME = "mlx-community/DeepSeek-R1-Distill-Qwen-1.5B-Instruct-abliterated-uncensored-v2-bf16"


def make_models(work: Path) -> tuple[Path, Path]:
    from macfinetune.backend.tinymodel import build_demo_model
    from macfinetune.core.paths import shipped

    tiny = build_demo_model(work / "build" / "tiny")
    root = work / "models"
    qwen = root / "Qwen3-1.7B-bf16"
    qwen.mkdir(parents=True)
    shutil.copy(shipped("resources", "estimator", "configs", "Qwen3-1.7B", "config.json"), qwen / "config.json")
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.name == "chat_template.jinja":
            shutil.copy(f, qwen / f.name)
    header = json.dumps({"__metadata__": {"format": "mlx"}}).encode()
    (qwen / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    refused = root / LONG_NAME.replace("/", "--")
    refused.mkdir()
    (refused / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                                     "hidden_size": 1536, "num_hidden_layers": 28,
                                                     "num_attention_heads": 12, "vocab_size": 151936}))
    (refused / "pytorch_model.bin").write_bytes(b"\0" * 1024)
    return tiny, root


def set_theme(app, dark: bool) -> None:
    from PySide6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    palette = app.style().standardPalette()
    if dark:
        roles = {QPalette.ColorRole.Window: "#2b2b2b", QPalette.ColorRole.WindowText: "#e6e6e6",
                 QPalette.ColorRole.Base: "#1e1e1e", QPalette.ColorRole.AlternateBase: "#2a2a2a",
                 QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#353535",
                 QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#2f65ca",
                 QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.PlaceholderText: "#8c8c8c",
                 QPalette.ColorRole.ToolTipBase: "#353535", QPalette.ColorRole.ToolTipText: "#e6e6e6",
                 QPalette.ColorRole.Mid: "#555555", QPalette.ColorRole.Light: "#505050",
                 QPalette.ColorRole.Dark: "#202020"}
        for role, color in roles.items():
            palette.setColor(role, QColor(color))
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#7a7a7a"))
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#7a7a7a"))
    app.setPalette(palette)


def settle(app, page, until=lambda: True, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end and not until():
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        app.processEvents()


def new_page(services_kwargs: dict):
    from macfinetune.ui.wizard import WizardPage, WizardServices

    page = WizardPage(WizardServices(**services_kwargs))
    page.resize(*SIZE)
    page.show()
    return page


def grab(app, page, out: Path, name: str) -> None:
    settle(app, page)
    page.grab().save(str(out / f"{name}.png"), "PNG", 0)  # quality 0: the strongest compression
    print(out / f"{name}.png")


def shoot(out: Path, rows: int, dark: bool, work: Path, models: Path, data: Path) -> None:
    from PySide6.QtWidgets import QApplication, QLineEdit

    from macfinetune.backend.architectures import supported_model_types
    from macfinetune.backend.chat_preview import template_renderer
    from macfinetune.backend.tokens import token_counter
    from macfinetune.core.hardware import machine_from_memory

    app = QApplication.instance() or QApplication([])
    set_theme(app, dark)
    suffix = "-dark" if dark else ""
    base = dict(machine=machine_from_memory(16), start_training=lambda *a: None, token_counter=token_counter,
                template_renderer=template_renderer,
                supported_types=supported_model_types(), runs_home=lambda: work / "runs")
    empty = new_page(dict(base, model_folders=[]))
    settle(app, empty, lambda: "No models" in empty.steps["model"].scan_label.text())
    grab(app, empty, out, f"wizard-model-empty{suffix}")
    empty.shutdown()
    empty.close()
    page = new_page(dict(base, model_folders=[models]))
    settle(app, page, lambda: page.steps["model"].table_model.rowCount() >= 2)
    page.steps["model"].choose_path(str(models / "Qwen3-1.7B-bf16"))
    grab(app, page, out, f"wizard-model{suffix}")
    page.go("data")
    page.steps["data"].choose_path(str(data))
    settle(app, page, lambda: page.state.data is not None and page.state.data.longest_tokens is not None, 600)
    grab(app, page, out, f"wizard-data{suffix}")
    page.go("method")
    grab(app, page, out, f"wizard-method{suffix}")
    page.go("settings")
    edit = page.findChild(QLineEdit, "field:method.rank")
    edit.setText("5000")
    edit.textEdited.emit("5000")
    grab(app, page, out, f"wizard-settings{suffix}")
    edit.setText("16")
    edit.textEdited.emit("16")
    page.go("review")
    grab(app, page, out, f"wizard-review{suffix}")
    shoot_macs(app, page, out, suffix)
    for key, value in (("training.batch_size", "16"), ("data.max_seq_length", "4096")):
        page.state.set(key, value)
    page.refresh()
    grab(app, page, out, f"wizard-review-over{suffix}")
    page.shutdown()
    page.close()


def shoot_macs(app, page, out: Path, suffix: str) -> None:
    """Train on 2 Macs after Check these Macs found one lacking the data and memory (a made-up answer)."""
    from PySide6.QtWidgets import QComboBox

    from macfinetune.core import hosts
    from macfinetune.core.events import JobEvent, JobFinished

    machines = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("me@mac-studio-in-the-office-upstairs.local")),
                              "ring", (), "/Users/me/Library/Application Support/macfinetune/machines.json")
    page.services.machines = lambda: machines
    page.services.start_on_hosts = lambda *a: None
    page.services.check_hosts = lambda *a: 99
    page.refresh()
    page.findChild(QComboBox, "trainOn").setCurrentIndex(1)
    page.steps["review"].check_hosts()
    data = page.recipe.data.path
    studio = machines.hosts[1].ssh
    page.on_event(JobEvent(99, "check_hosts", JobFinished(hosts.HostCheck(
        (hosts.HostReport("127.0.0.1", True), hosts.HostReport(studio, True, missing=(data,))),
        (f"{studio}: the run needs about 9.4 GB per Mac, that Mac can give MLX 5.3 GB; lower the batch size or "
         "sequence length", f"{studio}: {data} is not there; copy it (the app's Copy to the Macs, or "
         "`macfinetune hosts check --copy`)"), 9.4))))
    grab(app, page, out, f"wizard-review-macs{suffix}")
    page.services.machines = None
    page.refresh()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--light-only", action="store_true")
    args = parser.parse_args()
    from bench.gui_wizard import write_rows

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wizard-shots-"))
    os.environ["HF_HUB_CACHE"] = str(work / "hf")
    _, models = make_models(work)
    data = work / f"chat-{args.rows}-rows.jsonl"
    write_rows(data, args.rows)
    for dark in (False,) if args.light_only else (False, True):
        shoot(args.out, args.rows, dark, work, models, data)


if __name__ == "__main__":
    main()
