"""What the first-launch screen checks about this machine, without importing MLX (the window paints first).

Each fact is a label, a value in words and whether it is fine for training; the reasons are the seeds'
figures (Metal's working set is about 75% of memory on Macs with 36 GB or more, less below) and mlx-lm's needs.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from macfinetune.core.hardware import GB, GIB, working_set_for

MIN_FREE_DISK_GB = 20  # a 7-8B model (~15 GB in bf16) plus a run's checkpoints
MIN_MACOS = (14, 0)  # the oldest macOS the bundled MLX wheel loads on (packaging/mlx_floor.py reads it)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    ok: bool
    advice: str = ""


def machine_facts(data_folder: Path, memory_bytes: int | None = None) -> list[Fact]:
    memory = memory_bytes or _memory_bytes()
    return [_chip(), _memory(memory), _working_set(memory), _macos(), _mlx(), _disk(data_folder)]


def _memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _chip() -> Fact:
    name = _sysctl("machdep.cpu.brand_string") if sys.platform == "darwin" else platform.processor()
    name = name or platform.machine()
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    advice = "" if apple else "MLX trains on Apple silicon's GPU; here it runs on the CPU, slowly"
    return Fact("Chip", name, apple, advice)


def _memory(memory: int) -> Fact:
    gib = memory / GIB
    advice = "" if gib >= 16 else "16 GB or more is needed for 3B models and up; the tiny and 1B recipes fit"
    return Fact("Memory", f"{gib:.0f} GB unified memory", gib >= 16, advice)


def _working_set(memory: int) -> Fact:
    working = working_set_for(memory)
    return Fact("GPU budget", f"{working / GB:.1f} GB (Metal's recommended working set; the estimator "
                "judges every run against it)", True)


def _macos() -> Fact:
    if sys.platform != "darwin":
        return Fact("System", f"{platform.system()} {platform.release()}", False, "the app is made for macOS")
    version = platform.mac_ver()[0] or "unknown"
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    ok = parts >= MIN_MACOS
    advice = "" if ok else f"MLX needs macOS {'.'.join(map(str, MIN_MACOS))} or later"
    return Fact("macOS", version, ok, advice)


def _mlx() -> Fact:
    try:
        versions = f"MLX {metadata.version('mlx')}, mlx-lm {metadata.version('mlx-lm')}"
    except metadata.PackageNotFoundError as e:
        return Fact("MLX", "not installed", False, f"install {e.name}")
    return Fact("MLX", versions, True)


def _disk(folder: Path) -> Fact:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / GB
    ok = free >= MIN_FREE_DISK_GB
    advice = "" if ok else f"models and checkpoints need space: free at least {MIN_FREE_DISK_GB} GB"
    return Fact("Free disk", f"{free:.0f} GB free for {folder}", ok, advice)


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
