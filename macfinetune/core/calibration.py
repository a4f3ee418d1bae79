"""Runs as calibration data: each run folder keeps its estimate beside its measured peak.

``write_run_estimate`` is called when a run starts (``estimate.json`` in the run folder);
``run_row`` pairs it with the largest ``peak_memory_gb`` the run reported; ``machine_rate`` turns
the runs' tokens/s into this machine's effective throughput for the time estimate. The shipped
calibration tables (this project's grid and the seeds' figures) are in
``resources/estimator/calibration.yaml``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from macfinetune.core import atomic, runs
from macfinetune.core.estimator import Estimate, coefficients
from macfinetune.core.paths import shipped
from macfinetune.core.timing import Rate

ESTIMATE_FILE = "estimate.json"


@dataclass(frozen=True)
class RunRow:
    run: str
    estimate_gb: float
    measured_gb: float
    flops_per_token: float
    tokens_per_second: float | None

    @property
    def error(self) -> float:
        """(estimate - measured) / measured."""
        return (self.estimate_gb - self.measured_gb) / self.measured_gb


def estimate_record(est: Estimate, flops_per_token: float, verdict=None, overridden: bool = False) -> dict:
    record = {
        "total_gb": round(est.total_gb, 4),
        "breakdown_gb": est.breakdown_gb(),
        "phase": est.phase,
        "trainable_parameters": est.trainable_params,
        "settings": asdict(est.settings),
        "flops_per_token": flops_per_token,
        "uncertain": list(est.uncertain),
        "coefficients": coefficients().provenance.get("fitted", ""),
    }
    if verdict is not None:
        record.update(verdict=verdict.status, usable_gb=round(verdict.usable_bytes / 1e9, 3), overridden=overridden)
    return record


def write_run_estimate(run_dir: Path, est: Estimate, flops_per_token: float, verdict=None,
                       overridden: bool = False) -> None:
    atomic.write_json(Path(run_dir) / ESTIMATE_FILE, estimate_record(est, flops_per_token, verdict, overridden))


def read_run_estimate(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / ESTIMATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "total_gb" in data else None


def run_row(run_dir: Path) -> RunRow | None:
    """The run's estimate and its measured peak (the largest reported), or None if either is missing."""
    est = read_run_estimate(run_dir)
    reports = [r for r in runs.read_metrics(run_dir) if r.get("event") == "train"]
    peaks = [r["peak_memory_gb"] for r in reports if isinstance(r.get("peak_memory_gb"), (int, float))]
    if est is None or not peaks:
        return None
    speeds = [r["tokens_per_second"] for r in reports if r.get("tokens_per_second")]
    return RunRow(Path(run_dir).name, float(est["total_gb"]), max(peaks), float(est.get("flops_per_token") or 0),
                  statistics.median(speeds) if speeds else None)


def collect_rows(runs_home: Path) -> list[RunRow]:
    home = Path(runs_home)
    folders = sorted(p for p in home.iterdir() if p.is_dir()) if home.is_dir() else []
    return [row for row in map(run_row, folders) if row is not None]


def machine_rate(rows: list[RunRow]) -> Rate | None:
    """This machine's effective FLOP/s from its past runs (their tokens/s x arithmetic per token)."""
    rates = [r.flops_per_token * r.tokens_per_second for r in rows if r.flops_per_token and r.tokens_per_second]
    if not rates:
        return None
    return Rate(min(rates), max(rates), f"{len(rates)} past run{'s' if len(rates) > 1 else ''} on this machine")


@lru_cache(maxsize=1)
def calibration_tables() -> dict:
    """resources/estimator/calibration.yaml: the machine grid and the seed figures, with provenance."""
    with open(shipped("resources", "estimator", "calibration.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)
