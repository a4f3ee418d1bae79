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
from dataclasses import asdict, dataclass, replace
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
        "raw_total_gb": round((est.uncorrected_bytes or est.total_bytes) / 1e9, 4),
        "family": est.family,
        "mode": est.mode,
    }
    if est.correction:
        record["correction"] = est.correction
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


RATE_SIZE_FACTOR = 10  # past runs whose arithmetic per token is within this factor of the run asked about


def machine_rate(rows: list[RunRow], flops_per_token: float | None = None) -> Rate | None:
    """This machine's effective FLOP/s from its past runs (their tokens/s x arithmetic per token).

    Only runs of a similar size count (arithmetic per token within RATE_SIZE_FACTOR of ``flops_per_token``): a
    tiny model's steps are overhead, not arithmetic, and its rate would make a large model's time absurd."""
    rates = [r.flops_per_token * r.tokens_per_second for r in rows if r.flops_per_token and r.tokens_per_second
             and (flops_per_token is None or
                  1 / RATE_SIZE_FACTOR <= r.flops_per_token / flops_per_token <= RATE_SIZE_FACTOR)]
    if not rates:
        return None
    return Rate(min(rates), max(rates), f"{len(rates)} past run{'s' if len(rates) > 1 else ''} on this machine")


@lru_cache(maxsize=1)
def calibration_tables() -> dict:
    """resources/estimator/calibration.yaml: the machine grid and the seed figures, with provenance."""
    with open(shipped("resources", "estimator", "calibration.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- this Mac's correction ----------------------------------------------------------------
#
# Every finished run keeps its estimate (estimate.json) beside its measured peak (metrics.jsonl). Runs of
# the same model family and method, measured by the same backend (Metal or CPU), tell how far the
# estimator is off on this Mac for configurations like the one asked about. The correction is
#   1. the median of measured / estimated over those runs,
#   2. shrunk toward no correction as if one more run had matched the estimate exactly (one run moves it
#      half-way, four runs four fifths of the way),
#   3. bounded to CORRECTION_BOUND either way: it corrects the model, it never replaces it.

CORRECTION_BOUND = 0.15


@dataclass(frozen=True)
class MacRow:
    """One finished run as a correction row: what it was, what was estimated, what was measured."""

    run: str
    family: str
    method: str
    mode: str  # 'metal' or 'cpu'
    estimate_gb: float  # the uncorrected estimate
    measured_gb: float

    @property
    def ratio(self) -> float:
        return self.measured_gb / self.estimate_gb


@dataclass(frozen=True)
class Correction:
    factor: float  # multiply the estimate by this
    runs: int
    family: str
    method: str
    low: float  # the smallest and largest measured / estimated ratio among the runs
    high: float
    bounded: bool  # the runs asked for more than CORRECTION_BOUND

    @property
    def percent(self) -> float:
        return 100 * (self.factor - 1)

    @property
    def confidence(self) -> str:
        """'low' (one run, or runs that disagree by more than 15%), 'medium' (2-3 runs), 'high' (4 or more)."""
        if self.runs < 2 or self.high - self.low > 0.15:
            return "low"
        return "medium" if self.runs < 4 else "high"

    @property
    def label(self) -> str:
        runs = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        text = (f"corrected {self.percent:+.0f}% from {runs} on this Mac ({self.family}, {self.method}; "
                f"measured/estimated {self.low:.2f}-{self.high:.2f}; confidence {self.confidence})")
        return text + (f"; held to the {CORRECTION_BOUND:.0%} bound" if self.bounded else "")


def mac_row(run_dir: Path) -> MacRow | None:
    """A finished run's correction row, or None when its estimate, family or measured peak is missing."""
    est = read_run_estimate(run_dir)
    row = run_row(run_dir)
    if est is None or row is None or not est.get("family"):
        return None
    settings = est.get("settings") or {}
    mode = est.get("mode") or ("cpu" if settings.get("device") == "cpu" else "metal")
    raw = float(est.get("raw_total_gb") or est["total_gb"])
    if raw <= 0 or row.measured_gb <= 0:
        return None
    return MacRow(row.run, str(est["family"]), str(settings.get("method", "lora")), mode, raw, row.measured_gb)


def mac_rows(run_dirs) -> list[MacRow]:
    return [row for row in map(mac_row, run_dirs) if row is not None]


def mac_correction(rows: list[MacRow], family: str, method: str, mode: str) -> Correction | None:
    """This Mac's correction for estimates of ``family`` x ``method`` in ``mode``; None without such runs."""
    ratios = sorted(r.ratio for r in rows if (r.family, r.method, r.mode) == (family, method, mode))
    if not ratios:
        return None
    n = len(ratios)
    wanted = 1 + (statistics.median(ratios) - 1) * n / (n + 1)
    factor = min(1 + CORRECTION_BOUND, max(1 - CORRECTION_BOUND, wanted))
    return Correction(factor, n, family, method, ratios[0], ratios[-1], bounded=factor != wanted)


def correct(est: Estimate, correction: Correction | None) -> Estimate:
    """The estimate scaled by this Mac's correction (every term alike), with the correction in words."""
    if correction is None or correction.factor == 1.0:
        return est
    terms = tuple(replace(t, bytes=int(t.bytes * correction.factor)) for t in est.terms)
    return replace(est, terms=terms, correction=correction.label, uncorrected_bytes=est.total_bytes)


MAC_ROWS_LIMIT = 60  # the most recent run folders read for the correction (each read is a metrics file)


def this_mac_run_dirs(runs_home: Path, calibration_home: Path, limit: int = MAC_ROWS_LIMIT) -> list[Path]:
    """The finished-run candidates for this Mac's correction: the data folder's runs, the runs opened from
    elsewhere, and the 'measure this Mac' probes; the ``limit`` most recently changed, each once."""
    from macfinetune.core import run_index

    folders = {s.path.resolve() for s in run_index.all_runs(Path(runs_home))}
    folders |= {s.path.resolve() for s in runs.list_runs(Path(calibration_home))}

    def changed(folder: Path) -> float:
        try:
            return folder.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(folders, key=changed, reverse=True)[:limit]


def this_mac_rows(runs_home: Path, calibration_home: Path) -> list[MacRow]:
    """Correction rows from this Mac's runs and probes (``this_mac_run_dirs``); [] when there are none."""
    return mac_rows(this_mac_run_dirs(runs_home, calibration_home))


def correct_with_rows(est: Estimate, rows: list[MacRow] | None) -> tuple[Estimate, Correction | None]:
    """``est`` corrected by the rows of its family, method and mode (unchanged without rows)."""
    if not rows:
        return est, None
    correction = mac_correction(rows, est.family, est.settings.method, est.mode)
    return correct(est, correction), correction


def correct_for_this_mac(est: Estimate, run_dirs) -> tuple[Estimate, Correction | None]:
    """``est`` corrected by the finished runs in ``run_dirs`` (those of its family, method and mode)."""
    correction = mac_correction(mac_rows(run_dirs), est.family, est.settings.method, est.mode)
    return correct(est, correction), correction
