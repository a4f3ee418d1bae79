"""Check the hosts of a hostfile before a multi-Mac run, and copy the model and data to them.

Every host is asked over SSH (``ssh -o BatchMode=yes``: a password prompt counts as not reachable)
to run ``macfinetune hosts probe --json`` with the same Python as this one (what ``mlx.launch``
assumes too); the answers are judged in ``core.hosts.judge_hosts``. This machine's own entries
(127.0.0.1, localhost) are probed without SSH. ``MACFINETUNE_SSH`` replaces the ssh command (for
example ``ssh -i ~/.ssh/studio``). No MLX runs here except in the local probe's machine facts.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from macfinetune.core import paths
from macfinetune.core.hardware import GB
from macfinetune.core.hosts import (
    RESUME_STAGING,
    Host,
    Hostfile,
    HostReport,
    is_local,
    report_from_json,
)
from macfinetune.core.models_catalog import cached_snapshot

PROBE_TIMEOUT_S = 90
PACKAGES = ("macfinetune", "mlx", "mlx-lm")


def ssh_command() -> list[str]:
    return [*shlex.split(os.environ.get("MACFINETUNE_SSH", "ssh")), "-o", "BatchMode=yes", "-o", "ConnectTimeout=8"]


def probe_here(needs: list[str], models: list[str] = ()) -> dict:
    """What ``hosts probe --json`` prints: versions, the memory MLX may use, free disk, missing paths."""
    from macfinetune.backend.machine_probe import probe_machine

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    machine = probe_machine()
    home = paths.data_home()
    existing = next((p for p in (home, *home.parents) if p.exists()), Path.home())
    return {"versions": versions, "usable_gb": round(machine.usable_bytes / GB, 2),
            "free_disk_gb": round(shutil.disk_usage(existing).free / GB, 2),
            "missing": [p for p in needs if not Path(p).expanduser().exists()],
            "missing_models": [m for m in models if cached_snapshot(m) is None],
            "machine": machine.source}


def probe_host(host: Host, needs: list[str], python: str | None = None, models: list[str] = ()) -> HostReport:
    """Ask one host about itself; never raises (a failure is the report's words)."""
    command = [python or sys.executable, "-m", "macfinetune", "hosts", "probe", "--json"]
    for need in needs:
        command += ["--need", need]
    for model in models:
        command += ["--need-model", model]
    argv = command if is_local(host) else [*ssh_command(), host.ssh, shlex.join(command)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        return HostReport(host.ssh, False, f"cannot run {e.filename}")
    except subprocess.TimeoutExpired:
        return HostReport(host.ssh, False, f"no answer within {PROBE_TIMEOUT_S} s")
    said = _last_line(done.stderr)
    if done.returncode == 255 and not is_local(host):  # ssh's own failure: no connection, no key, host unknown
        return HostReport(host.ssh, False, said or "ssh failed")
    if done.returncode != 0:
        return HostReport(host.ssh, True, f"`{shlex.join(command[:3])}` failed there ({said or f'exit {done.returncode}'}); "
                                          "install macfinetune at the same path on every Mac")
    try:
        return report_from_json(host.ssh, json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, AttributeError):
        return HostReport(host.ssh, True, f"answered something that is not a probe: {_last_line(done.stdout)!r}")


def probe_hosts(hostfile: Hostfile, needs: list[str], python: str | None = None,
                on_report: Callable[[HostReport], None] = lambda r: None, models: list[str] = ()) -> list[HostReport]:
    reports = []
    for host in hostfile.hosts:
        report = probe_host(host, needs, python, models)
        on_report(report)
        reports.append(report)
    return reports


def copy_to(host: Host, path: str, say: Callable[[str], None] = print,
            progress: Callable[[str], None] | None = None, stopped: Callable[[], bool] = lambda: False) -> bool:
    """Copy ``path`` (a model folder or data) to the same absolute path on ``host`` with rsync (resumable:
    ``--partial``, so a copy stopped half-way goes on where it was). rsync's progress lines go to
    ``progress`` (the terminal when None); ``stopped()`` is asked between them and ends rsync. Returns
    False when stopped; raises RuntimeError with rsync's words when it fails."""
    if is_local(host):
        return True
    source = Path(path).expanduser().resolve()
    say(f"copying {source} to {host.ssh}:{source}")
    return _rsync(host, [str(source)], str(source.parent), progress, stopped)


def copy_run(host: Host, run_dir: Path, say: Callable[[str], None] = print,
             progress: Callable[[str], None] | None = None, stopped: Callable[[], bool] = lambda: False) -> bool:
    """Send a run folder (settings, data, checkpoints; not its metrics) to ``host``'s resume staging folder
    (``core.hosts.resume_staging``, under its home) so a rank there can resume it. Only what changed is
    sent (rsync), and nothing of the original on this Mac is touched."""
    if is_local(host):
        return True
    run_dir = Path(run_dir).expanduser().resolve()
    staging = f"{RESUME_STAGING}/{run_dir.name}"
    say(f"sending the run folder to {host.ssh}:~/{staging}")
    return _rsync(host, ["--delete", "--exclude", "metrics.jsonl", f"{run_dir}/"], staging, progress, stopped)


def _rsync(host: Host, sources: list[str], remote_dir: str, progress, stopped) -> bool:
    rsync = shutil.which("rsync")
    if rsync is None:
        raise RuntimeError("copying needs rsync on this Mac (it ships with macOS)")
    mkdir = [*ssh_command(), host.ssh, shlex.join(["mkdir", "-p", remote_dir])]
    made = subprocess.run(mkdir, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if made.returncode != 0:
        raise RuntimeError(f"{host.ssh}: cannot make {remote_dir}: {_last_line(made.stderr)}")
    target = f"{host.ssh}:{remote_dir}/"
    argv = [rsync, "-a", "--partial", "--progress", "-e", shlex.join(ssh_command()), *sources, target]
    if progress is None:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        returncode, err = done.returncode, done.stderr
    else:
        returncode, err = _stream(argv, progress, stopped)
        if returncode is None:
            return False
    if returncode != 0:
        raise RuntimeError(f"{host.ssh}: copying {sources[-1]} failed: {_last_line(err)}")
    return True


PROGRESS_EVERY_S = 0.5  # rsync counts many times a second; a line this often, and always its last one


def _stream(argv: list[str], progress: Callable[[str], None], stopped: Callable[[], bool]) -> tuple[int | None, str]:
    """Run rsync, handing its progress lines (rsync ends them with CR while it counts) to ``progress`` at most
    every ``PROGRESS_EVERY_S`` and its last line at the end; (exit status or None when stopped, stderr)."""
    import tempfile

    shown, pending = 0.0, ""

    def said(text: str) -> None:
        nonlocal shown, pending
        pending = text
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            shown, pending = time.monotonic(), ""
            progress(text)

    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                               stderr=err, bufsize=0) as proc:
        line = b""
        while True:
            if stopped():
                proc.terminate()
                proc.wait()
                return None, ""
            ready, _, _ = select.select([proc.stdout], [], [], 0.25)  # a silent rsync still hears Stop
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
            *parts, line = line.replace(b"\r", b"\n").split(b"\n")
            for part in parts:
                text = part.decode("utf-8", "replace").strip()
                if text:
                    said(text)
        if line.strip():
            said(line.decode("utf-8", "replace").strip())
        if pending:
            progress(pending)
        returncode = proc.wait()
        err.seek(0)
        return returncode, err.read()


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
