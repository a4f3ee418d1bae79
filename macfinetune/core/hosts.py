"""Several Macs, one run: the hostfile, the global batch and what a check of each host found.

The hostfile is MLX's own (what ``mlx.launch --hostfile`` reads), so one file serves both:
``{"backend": "ring", "envs": [...], "hosts": [{"ssh": "user@studio.local", "ips": ["10.0.0.2"]}, ...]}``
or a bare list of hosts. The first host is rank 0: it owns the run folder, metrics and checkpoints.
Pure Python: no MLX, no SSH here (``backend.launch`` runs the commands; this module judges).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from macfinetune.core.problems import Problem, ProblemError

BACKENDS = ("ring", "jaccl", "mpi")
_NAME = re.compile(r"^([\w.-]+@)?[A-Za-z0-9_]([\w.-]*[A-Za-z0-9_])?$")  # [user@]host, or an ssh config alias
RUN_FILE = "distributed.json"  # in the run folder: how many hosts started it and the global batch
RESUME_STAGING = ".cache/macfinetune/resume"  # on the other Macs, under the home folder: a run folder sent
#                                           there so their ranks can resume it (rank 0's Mac keeps the original)


@dataclass(frozen=True)
class Host:
    ssh: str  # what ssh connects to: "studio.local" or "me@10.0.0.2"
    ips: tuple[str, ...] = ()  # addresses the ring backend connects over (Ethernet, Thunderbolt bridge)

    @property
    def name(self) -> str:
        return self.ssh.rsplit("@", 1)[-1]


@dataclass(frozen=True)
class Hostfile:
    hosts: tuple[Host, ...]
    backend: str = "ring"
    envs: tuple[str, ...] = ()
    path: str = ""

    @property
    def size(self) -> int:
        return len(self.hosts)

    def to_json(self) -> dict:
        return {"backend": self.backend, "envs": list(self.envs),
                "hosts": [{"ssh": h.ssh, "ips": list(h.ips)} for h in self.hosts]}


def local_hostfile(ranks: int) -> Hostfile:
    """``ranks`` processes on this machine over loopback (what ``mlx.launch -n N`` does)."""
    return Hostfile(tuple(Host("127.0.0.1", ("127.0.0.1",)) for _ in range(ranks)), "ring")  # mlx.launch: no SSH


def load_hostfile(path: Path) -> Hostfile:
    """Read and check a hostfile; every problem names the file, the line and the value."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProblemError(Problem(f"cannot read the hostfile: {e.strerror or e}", file=str(path))) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemError(Problem(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno)) from None
    return _hostfile(data, str(path), text)


def _hostfile(data, path: str, text: str) -> Hostfile:
    backend, envs, entries = "ring", [], data
    if isinstance(data, dict):
        backend, envs, entries = data.get("backend") or "ring", data.get("envs", []), data.get("hosts")
    problems = []
    if backend not in BACKENDS:
        problems.append(Problem(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}", file=path,
                                line=_line_of(text, "backend"), field="backend", value=backend))
    if not isinstance(entries, list) or not entries:
        problems.append(Problem('expected a list of hosts, e.g. [{"ssh": "studio.local", "ips": ["10.0.0.2"]}]',
                                file=path, field="hosts", value=entries))
        raise ProblemError(problems)
    if not isinstance(envs, list) or not all(isinstance(e, str) and "=" in e for e in envs):
        problems.append(Problem('envs must be a list of "NAME=value" strings', file=path,
                                line=_line_of(text, "envs"), field="envs", value=envs))
    hosts, lines = [], _entry_lines(text)
    for n, entry in enumerate(entries, 1):
        host, problem = _host(entry, n, path, lines[n - 1] if n <= len(lines) else None)
        problems += problem
        hosts.append(host)
    if problems:
        raise ProblemError(problems)
    return Hostfile(tuple(hosts), backend, tuple(envs), path)


def _host(entry, n: int, path: str, line: int | None) -> tuple[Host | None, list[Problem]]:
    where = f"hosts[{n - 1}]"
    if isinstance(entry, str):
        entry = {"ssh": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("ssh"), str) or not entry["ssh"].strip():
        return None, [Problem(f'{where}: expected {{"ssh": "hostname", "ips": ["address"]}}', file=path,
                              line=line, field=where, value=entry)]
    ips = entry.get("ips", [])
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        return None, [Problem(f"{where}.ips must be a list of addresses", file=path,
                              line=line, field=f"{where}.ips", value=ips)]
    wrong = host_problems(entry["ssh"].strip(), ips)
    if wrong:
        return None, [Problem(f"{where}: {w}", file=path, line=line, field=where, value=entry) for w in wrong]
    return Host(entry["ssh"].strip(), tuple(ips)), []


def host_problems(ssh: str, ips: Sequence[str]) -> list[str]:
    """What is wrong with one host, in words: ``ssh`` is ``[user@]host`` (a name or an address), each of
    ``ips`` an IP address, as ``mlx.launch`` reads them (it connects the ring backend to ``ips``)."""
    return [p for p in (ssh_problem(ssh),) if p] + address_problems(ips)


def ssh_problem(ssh: str) -> str:
    """Why ``ssh`` is not ``[user@]host`` ('' when it is)."""
    if not ssh:
        return "no SSH host (user@host or host)"
    if _NAME.match(ssh) or _is_address(ssh.rsplit("@", 1)[-1]):
        return ""
    return f"{ssh!r} is not a host name or address (user@host: letters, digits, '.', '-', '_')"


def address_problems(ips: Sequence[str]) -> list[str]:
    return [f"{ip!r} is not an IP address (MLX's ring backend connects to addresses like 10.0.0.2)"
            for ip in ips if not _is_address(ip)]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _line_of(text: str, key: str) -> int | None:
    """The line of a top-level key (a parsed value has no position)."""
    at = text.find(f'"{key}"')
    return text.count("\n", 0, at) + 1 if at >= 0 else None


def _entry_lines(text: str) -> list[int]:
    """The line each entry of the hosts list starts on."""
    at = text.find('"hosts"')
    start = text.find("[", at if at >= 0 else 0)
    decoder, pos, lines = json.JSONDecoder(), start + 1, []
    while 0 < pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError:
            break
        lines.append(text.count("\n", 0, pos) + 1)
        pos = end
    return lines


# --- the batch across hosts ----------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a run's batch is split over the processes that train it."""

    hosts: int  # processes now (Macs, or ranks on one machine)
    global_batch: int  # rows per step over all hosts: fixed for the life of the run
    per_host_batch: int

    def explain(self, learning_rate: float) -> str:
        if self.hosts == 1:
            return f"one Mac, batch {self.global_batch}"
        return (f"{self.hosts} Macs × batch {self.per_host_batch} = global batch {self.global_batch} per step; "
                f"gradients are averaged over the Macs, so the learning rate {learning_rate:g} acts as it would "
                f"on one Mac at batch {self.global_batch} (each row is seen once per epoch, by one Mac)")


def layout(per_host_batch: int, hosts: int) -> Layout:
    return Layout(hosts, per_host_batch * hosts, per_host_batch)


def resumed_layout(global_batch: int, hosts: int, run_dir: str = "") -> Layout:
    """Continue a run on ``hosts`` processes: the global batch (and so the data order) stays."""
    if hosts < 1 or global_batch % hosts:
        divisors = [n for n in range(1, global_batch + 1) if global_batch % n == 0]
        raise ProblemError(Problem(
            f"the run's global batch is {global_batch}; it can continue on {', '.join(map(str, divisors))} "
            f"host(s), not {hosts}", file=run_dir, field="hosts", value=hosts))
    return Layout(hosts, global_batch, global_batch // hosts)


def resume_staging(home: Path, run_dir: Path) -> Path:
    """Where a rank on another Mac finds the run folder it resumes from when that Mac does not have it at
    the same path (the launcher copies it there first)."""
    return Path(home) / RESUME_STAGING / Path(run_dir).name


def write_run_layout(run_dir: Path, hosts: int, global_batch: int) -> None:
    from macfinetune.core import atomic

    atomic.write_json(Path(run_dir) / RUN_FILE, {"hosts": hosts, "global_batch": global_batch})


def read_global_batch(run_dir: Path) -> int | None:
    """The global batch of a run started on several hosts (None: a one-Mac run)."""
    try:
        return int(json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))["global_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def allreduce_bytes_per_step(trainable_params: int, hosts: int, bytes_per_value: int = 4) -> int:
    """Bytes each host sends per optimizer step in a ring all-reduce of the gradients: 2(N-1)/N of them.

    mlx-lm averages every trainable gradient once per step (fp32 LoRA/DoRA adapters; the weights'
    dtype for full fine-tuning)."""
    if hosts < 2:
        return 0
    return round(2 * (hosts - 1) / hosts * trainable_params * bytes_per_value)


# --- checking the hosts --------------------------------------------------------------------


@dataclass(frozen=True)
class HostReport:
    """What one host said about itself (``macfinetune hosts probe --json`` over SSH)."""

    host: str
    reachable: bool
    error: str = ""
    versions: dict = field(default_factory=dict)  # macfinetune, mlx, mlx-lm
    usable_gb: float | None = None  # the memory MLX may use there (Metal's working set less the system's share)
    free_disk_gb: float | None = None
    missing: tuple[str, ...] = ()  # model or data paths not present there
    missing_models: tuple[str, ...] = ()  # hub models (org/name) not in its Hugging Face cache


def judge_hosts(reports: list[HostReport], need_gb: float | None = None, need_disk_gb: float = 1.0) -> list[str]:
    """One sentence per thing that is wrong, naming the host; empty when every host is ready."""
    problems = []
    reference = next((r.versions for r in reports if r.reachable), {})
    for r in reports:
        if not r.reachable:
            problems.append(f"{r.host}: not reachable by SSH without a password ({r.error or 'no answer'}); "
                            f"add your key with `ssh-copy-id {r.host}`")
            continue
        if r.error:  # reachable, but macfinetune there did not answer
            problems.append(f"{r.host}: {r.error}")
            continue
        for package, version in reference.items():
            if r.versions.get(package) != version:
                problems.append(f"{r.host}: {package} {r.versions.get(package) or 'missing'}, "
                                f"but {reports[0].host} has {version}; install the same version on every Mac")
        if need_gb is not None and r.usable_gb is not None and r.usable_gb < need_gb:
            problems.append(f"{r.host}: the run needs about {gb_text(need_gb)} per Mac, that Mac can give MLX "
                            f"{r.usable_gb:.1f} GB; lower the batch size or sequence length")
        if r.free_disk_gb is not None and r.free_disk_gb < need_disk_gb:
            problems.append(f"{r.host}: only {r.free_disk_gb:.1f} GB of free disk")
        problems += [f"{r.host}: {path} is not there; copy it (the app's Copy to the Macs, or "
                     "`macfinetune hosts check --copy`)" for path in r.missing]
        problems += [f"{r.host}: {repo} is not downloaded there; run `macfinetune models download {repo}` on it "
                     "(a rank would otherwise download it while the others wait)" for repo in r.missing_models]
    return problems


@dataclass(frozen=True)
class HostCheck:
    """What a check of every host found (``jobs.check_hosts``): the reports, the problems in words,
    the memory each Mac needs for the recipe (None without a model to estimate) and what was copied."""

    reports: tuple[HostReport, ...]
    problems: tuple[str, ...]
    need_gb: float | None = None
    copied: tuple[str, ...] = ()  # "host: path" for every copy made

    @property
    def missing(self) -> bool:
        return any(r.missing for r in self.reports)


def gb_text(value: float) -> str:
    """A memory figure in words: one decimal, two below 1 GB (a small model's 0.04 GB is not '0.0 GB')."""
    return f"{value:.2f} GB" if value < 1 else f"{value:.1f} GB"


def recipe_needs(recipe=None, model: str | None = None, data: str | None = None) -> tuple[str | None, str | None,
                                                                                          float | None]:
    """(model, data, GB each Mac needs) for a check of the hosts: the paths the hosts must have (absolute,
    as on this Mac) and the estimator's figure for the recipe on a Mac (Metal). Without a recipe the
    defaults are fitted to the model as ``macfinetune estimate`` fits them. A model that cannot be
    found here gives no figure (each host's probe still says whether its folder is there)."""
    from macfinetune.core import catalog, gate
    from macfinetune.core.estimator import estimate, fitted_to
    from macfinetune.core.recipe import Recipe

    given = recipe is not None
    recipe = recipe if given else Recipe()
    model = model or recipe.model.path or None
    data = data or recipe.data.path or None
    local = tuple(str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p
                  for p in (model, data))
    if model is None:
        return local[0], local[1], None
    try:
        shape = catalog.find_shape(model)
    except ProblemError:
        return local[0], local[1], None
    settings = gate.run_settings(recipe, shape, "gpu")  # as the gate judges a run, on a Mac (full rows)
    if not given:
        settings = fitted_to(shape, settings)
    return local[0], local[1], estimate(shape, settings).total_gb


def needed_paths(model: str | None, data: str | None) -> list[str]:
    """The paths every host must have at the same place: the absolute ones (a hub id: ``needed_models``)."""
    return [p for p in (model, data) if p and Path(p).expanduser().is_absolute()]


def needed_models(model: str | None) -> list[str]:
    """A hub model (org/name) every host must have in its own Hugging Face cache."""
    from macfinetune.core.modelinfo import looks_like_repo_id

    return [model] if model and not Path(model).expanduser().is_absolute() and looks_like_repo_id(model) else []


def report_from_json(host: str, data: dict) -> HostReport:
    """A HostReport from what ``macfinetune hosts probe --json`` printed on ``host``."""
    return HostReport(host, True, "", dict(data.get("versions") or {}), data.get("usable_gb"),
                      data.get("free_disk_gb"), tuple(data.get("missing") or ()),
                      tuple(data.get("missing_models") or ()))


def is_local(host: Host) -> bool:
    """This machine itself (what ``mlx.launch`` starts without SSH)."""
    return host.name in ("127.0.0.1", "localhost", "::1")


# --- this Mac's machines (Preferences -> Machines) ---------------------------------------------

MACHINES_FILE = "machines.json"  # in the data folder: the app's hostfile, in MLX's format


def machines_file(data_folder: Path) -> Path:
    return Path(data_folder) / MACHINES_FILE


def parse_hostfile(data, path: str = "") -> Hostfile:
    """A hostfile from already-read JSON data (the Machines editor), checked as ``load_hostfile`` checks one."""
    return _hostfile(data, path, json.dumps(data, indent=2))


def save_hostfile(path: Path, hostfile: Hostfile) -> None:
    """Write ``hostfile`` atomically in MLX's format (``mlx.launch --hostfile`` reads it as it is)."""
    from macfinetune.core import atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(Path(path), hostfile.to_json(), label="hostfile")


def read_machines(data_folder: Path) -> Hostfile | None:
    """The app's machines, or None when there is no machines file (a broken one raises ProblemError)."""
    path = machines_file(data_folder)
    return load_hostfile(path) if path.exists() else None


def resume_hosts_for(run_dir: Path, machines: Hostfile | None) -> Hostfile | None:
    """Where the app resumes ``run_dir``: on the Machines when the run was started on several Macs and its
    global batch divides over them; otherwise None (this Mac, which takes the whole global batch)."""
    if machines is None or machines.size < 2:
        return None
    try:
        started = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    global_batch = started.get("global_batch") if isinstance(started, dict) else None
    if not isinstance(global_batch, int) or started.get("hosts", 1) < 2 or global_batch % machines.size:
        return None
    return machines
