"""This machine's memory and chip as ``core.hardware.Machine`` numbers (for the estimator).

On a Mac MLX reports the unified memory and Metal's recommended working set
(``mx.device_info()``); elsewhere (Linux CI) psutil gives the memory and the working set follows
the table's rule for a Mac of that size.
"""

from __future__ import annotations

import platform
import subprocess

from macfinetune.core.hardware import Machine, machine_from_memory

GIB = 2**30


def probe_machine() -> Machine:
    info = _device_info()
    memory = info.get("memory_size")
    working = info.get("max_recommended_working_set_size")
    name = _chip_name(info)
    if memory:
        return machine_from_memory(memory / GIB, name, int(working) if working else None,
                                   source=f"this Mac ({name or 'Apple silicon'}), from MLX")
    import psutil

    total = psutil.virtual_memory().total
    return machine_from_memory(round(total / GIB, 1), name, device="cpu",
                               source=f"this computer ({platform.machine()}, not a Mac; MLX on the CPU): "
                                      f"{total / GIB:.0f} GB, working set by the Mac rule")


def _device_info() -> dict:
    try:
        import mlx.core as mx

        return dict(mx.device_info())
    except Exception:  # MLX without a device (or not installed): fall back to psutil
        return {}


def _chip_name(info: dict) -> str | None:
    name = info.get("device_name") or ""
    if "Apple" in name or name.startswith("M"):
        return name
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            return out.stdout.strip() or None
        except OSError:
            return None
    return None
