"""A machine as plain numbers: memory, the Metal working-set limit, what the system keeps, the chip.

The numbers come from the backend's probe on a Mac (``mx.device_info()``), from the user
(``--memory-gb``), or from the table in ``resources/estimator/hardware.yaml``. Nothing here
imports MLX or asks the operating system anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import yaml

from macfinetune.core.paths import shipped
from macfinetune.core.problems import Problem, ProblemError

GB = 1e9  # mx.get_peak_memory() / 1e9 is what mlx-lm reports as GB
GIB = 2**30  # Macs are sold in GiB: a "16 GB" Mac has 16 GiB
MIN_MEMORY_GB, MAX_MEMORY_GB = 1, 4096  # the Macs --memory-gb and the estimator accept


@dataclass(frozen=True)
class Chip:
    name: str
    gpu_tflops: float  # peak fp32 GPU throughput, as published
    bandwidth_gbs: float = 0.0


@dataclass(frozen=True)
class Machine:
    """What the estimator needs to know about a computer."""

    memory_bytes: int  # unified memory (RAM)
    working_set_bytes: int  # Metal's max_recommended_working_set_size
    reserve_bytes: int  # what the system and other apps keep (the seeds: at least 4 GB)
    chip: Chip | None = None
    source: str = ""  # where the numbers come from, in words
    device: str = "gpu"  # where MLX trains: 'gpu' on a Mac (Metal), 'cpu' elsewhere

    @property
    def usable_bytes(self) -> int:
        """Memory a training run may take: the working-set limit, and never the system's share."""
        return max(0, min(self.working_set_bytes, self.memory_bytes - self.reserve_bytes))

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / GIB


@lru_cache(maxsize=1)
def hardware_table() -> dict:
    """resources/estimator/hardware.yaml: chips, the working-set rule, the system reserve."""
    with open(shipped("resources", "estimator", "hardware.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def chip(name: str | None) -> Chip | None:
    """A chip from the table by name ('M3 Pro', 'Apple M4 Max'); None when unknown."""
    if not name:
        return None
    key = name.replace("Apple", "").strip().lower()
    for row in hardware_table()["chips"]:
        if row["name"].lower() == key:
            return Chip(row["name"], float(row["gpu_tflops"]), float(row.get("bandwidth_gbs", 0.0)))
    return None


def working_set_for(memory_bytes: int) -> int:
    """Metal's recommended working set for a Mac with this much memory (the table's rule)."""
    rule = hardware_table()["working_set"]
    share = rule["small_share"] if memory_bytes < rule["large_from_gib"] * GIB else rule["large_share"]
    return int(memory_bytes * share)


def machine_from_memory(memory_gb: float, chip_name: str | None = None, working_set_bytes: int | None = None,
                        source: str = "", device: str = "gpu") -> Machine:
    """A Mac with ``memory_gb`` GB (GiB, as sold) of unified memory."""
    if not MIN_MEMORY_GB <= memory_gb <= MAX_MEMORY_GB:  # NaN fails both comparisons
        raise ProblemError(Problem(f"memory must be {MIN_MEMORY_GB} to {MAX_MEMORY_GB} GB, got {memory_gb!r}",
                                   field="memory_gb", value=memory_gb))
    memory = int(memory_gb * GIB)
    working = working_set_bytes or working_set_for(memory)
    reserve = int(hardware_table()["reserve_gb"] * GB)
    text = source or f"{memory_gb:g} GiB Mac ({memory / GB:.1f} GB), working set {working / GB:.1f} GB by the table's rule"
    return Machine(memory, working, reserve, chip(chip_name), text, device)
