"""Download a model from the Hugging Face hub: only the files mlx-lm needs, with progress,
cancel and resume.

How a download works:
1. Unless offline, the repository's file list and config.json are fetched first, so a model that
   mlx-lm cannot fine-tune (architecture, remote code, pickle-only weights) is refused before any
   weights move.
2. ``snapshot_download`` fetches safetensors, config and tokenizer files (never ``*.py``) into the
   hub cache. Its ``tqdm_class`` seam reports bytes and files; ``_ProgressBar.update`` raises
   ``DownloadCancelled`` when the JobControl asks to stop, which ends every worker thread.
3. Resume is huggingface_hub's: an interrupted file stays as ``blobs/<etag>.incomplete`` and the
   next download asks for the rest with an HTTP Range request.
Offline (``HF_HUB_OFFLINE=1`` or ``offline=True``) only the cache is read.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from macfinetune.core import models_catalog
from macfinetune.core.control import JobControl
from macfinetune.core.models_catalog import DownloadFinished, DownloadProgress
from macfinetune.core.problems import Problem, ProblemError

Emit = Callable[[object], None]
WEIGHT_PATTERNS = ["model*.safetensors", "*.safetensors"]
TOKENIZER_PATTERNS = ["*.json", "tokenizer.model", "*.tiktoken", "tiktoken.model", "*.txt", "*.jinja"]
_REPORT_EVERY = 0.25  # seconds between progress events


class DownloadCancelled(Exception):
    """The JobControl asked to stop; what was downloaded stays in the cache for a resume."""


def download_model(
    repo_id: str,
    emit: Emit | None = None,
    control: JobControl | None = None,
    *,
    revision: str | None = None,
    offline: bool | None = None,
    patterns: list[str] | None = None,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    supported: frozenset[str] | None = None,
) -> Path:
    """The local snapshot folder of ``repo_id``, downloaded as needed (see the module doc).

    ``patterns`` restricts the files (default: weights, config, tokenizer); ``supported`` is the
    set of model types to accept (default: mlx-lm's). Raises ProblemError with the reason, or
    DownloadCancelled. ``emit`` may be called from the download's worker threads.
    """
    from huggingface_hub import constants

    emit = emit or (lambda event: None)
    offline = constants.is_offline_mode() if offline is None else offline
    weights_wanted = patterns is None
    if not offline and not _reachable(endpoint):  # the cache only, at once: huggingface_hub would retry for ~20 s
        offline = True
    if patterns is None and not offline:
        patterns = _check_remote(repo_id, revision, cache_dir, endpoint, supported)
    folder = _snapshot(repo_id, emit, control or JobControl(), revision=revision, offline=offline,
                       patterns=patterns or [*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS], cache_dir=cache_dir,
                       endpoint=endpoint)
    if weights_wanted:
        models_catalog.check_usable(folder, _supported(supported))
    emit(DownloadFinished(repo_id, str(folder)))
    return folder


def _supported(supported: frozenset[str] | None) -> frozenset[str]:
    from macfinetune.backend.architectures import supported_model_types

    return supported if supported is not None else supported_model_types()


def _check_remote(repo_id: str, revision, cache_dir, endpoint, supported) -> list[str] | None:
    """1. Refuse an unusable model before its weights move; return the patterns to fetch."""
    from huggingface_hub import HfApi, hf_hub_download

    def fetch(name: str) -> dict | None:
        if name not in files:
            return None
        return _json(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, endpoint=endpoint))

    try:
        files = HfApi(endpoint=endpoint).list_repo_files(repo_id, revision=revision)
        config, tok = fetch("config.json") or {}, fetch("tokenizer_config.json")
    except Exception as e:  # offline, not found, gated, network: the snapshot step says which
        if _is_fatal(e):
            raise _hub_problem(repo_id, e) from None
        return None
    problems = models_catalog.usability_problems(config, set(files), _supported(supported), tok, where=repo_id)
    if problems:
        raise ProblemError(problems)
    return [_weights_pattern(files), *TOKENIZER_PATTERNS]


def _weights_pattern(files: list[str]) -> str:
    """mlx-lm's ``model*.safetensors`` when it matches (skips duplicates like consolidated.safetensors)."""
    return WEIGHT_PATTERNS[0] if fnmatch.filter(files, WEIGHT_PATTERNS[0]) else WEIGHT_PATTERNS[1]


def _json(path: str) -> dict:
    import json

    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _snapshot(repo_id: str, emit: Emit, control: JobControl, *, revision, offline, patterns, cache_dir,
              endpoint) -> Path:
    """2. snapshot_download with our progress bar class; errors become ProblemError."""
    from huggingface_hub import snapshot_download

    bar = progress_bar_class(repo_id, emit, control)
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline,
                                   cache_dir=cache_dir, endpoint=endpoint, tqdm_class=bar)
    except DownloadCancelled:
        raise
    except Exception as e:  # the hub client raises many types: offline, 404, gated, network
        if _caused_by_cancel(e):
            raise DownloadCancelled(repo_id) from None
        raise _hub_problem(repo_id, e, offline) from None
    bar.state.finish()
    return Path(folder)


def _caused_by_cancel(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, DownloadCancelled):
            return True
        error = error.__cause__ or error.__context__
    return False


def _reachable(endpoint: str | None) -> bool:
    """One request to the hub, no retries (through huggingface_hub's own session, so its proxies apply): False only
    when no connection could be made; any answer, even an error status, means the hub is there."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint or constants.ENDPOINT, timeout=10)
    except Exception as e:
        return not _no_network(e)
    return True


def _no_network(error: Exception) -> bool:
    """A connection that could not be made (no network, DNS), as huggingface_hub and httpx raise it."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:  # the cause may be wrapped
        seen.add(id(current))
        if "Connect" in type(current).__name__ or isinstance(current, (ConnectionError, TimeoutError)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_fatal(error: Exception) -> bool:
    name = type(error).__name__
    return "RepositoryNotFound" in name or "GatedRepo" in name or "RevisionNotFound" in name


def _hub_problem(repo_id: str, error: Exception, offline: bool = False) -> ProblemError:
    return ProblemError(Problem(f"could not get {repo_id!r} from Hugging Face: {hub_reason(error, offline)}",
                                field="model", value=repo_id))


_REASONS = (  # (text in the exception's type name or message, what to tell the user)
    ("GatedRepo", "the repository is gated; accept its license on huggingface.co and log in (`hf auth login`)"),
    ("RepositoryNotFound", "no such repository (check the name; private models need `hf auth login`)"),
    ("RevisionNotFound", "no such revision (branch, tag or commit) in the repository"),
    ("LocalEntryNotFound", "offline (HF_HUB_OFFLINE is set or there is no network) and the model is not in the "
                           "local cache; connect and download it once, or pick a model from `macfinetune models list`"),
    ("OfflineModeIsEnabled", "offline mode is on (HF_HUB_OFFLINE) and the model is not in the local cache"),
    ("IncompleteSnapshot", "only part of the model is in the local cache; connect to finish the download"),
    ("Connect", "no network connection to huggingface.co; check the connection or use a cached model"),
)


def hub_reason(error: Exception, offline: bool = False) -> str:
    """A sentence a person can act on, for the exceptions huggingface_hub raises."""
    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else name
    for key, reason in _REASONS:
        if key in name:
            return reason
    if offline:
        return _REASONS[3][1]
    return f"{name}: {text}"


# --- models already in the cache ------------------------------------------------------------------


def cached_models(cache: Path) -> list[tuple[str, Path, str]]:
    """(repo id, snapshot folder, commit) of each model in a hub cache, from huggingface_hub's own scan.

    The current revision is the one refs/main points at, else the most recently modified one;
    repositories without a config.json (tokenizer-only, datasets) are left out."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(cache).repos
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        revision = _current_revision(repo) if repo.repo_type == "model" else None
        if revision is not None and (revision.snapshot_path / "config.json").is_file():
            found.append((repo.repo_id, revision.snapshot_path, revision.commit_hash))
    return found


def _current_revision(repo):
    on_main = [r for r in repo.revisions if "main" in r.refs]
    return on_main[0] if on_main else max(repo.revisions, key=lambda r: r.last_modified, default=None)


def local_models(extra_folders=(), supported: frozenset[str] | None = None) -> list[models_catalog.ModelEntry]:
    """Every model on this machine (hub cache, LM Studio, our models folder, ``extra_folders``), described."""
    sources = models_catalog.default_sources(extra_folders)
    return models_catalog.discover(sources, supported, {"hf-cache": cached_models})


# --- progress ---------------------------------------------------------------------------------


class _ProgressState:
    """Totals across huggingface_hub's bars (bytes to disk, files done), reported as events."""

    def __init__(self, repo_id: str, emit: Emit, control: JobControl, clock=time.monotonic):
        self.repo_id, self.emit, self.control, self.clock = repo_id, emit, control, clock
        self.lock = threading.Lock()
        self.byte_bars: list = []
        self.file_bar = None
        self.last = None

    def check_stop(self) -> None:
        if self.control.stop_requested:
            raise DownloadCancelled(self.repo_id)

    def changed(self, force: bool = False) -> None:
        with self.lock:
            now = self.clock()
            if force or self.last is None or now - self.last >= _REPORT_EVERY:
                self.last = now
                self.emit(self.snapshot())

    def snapshot(self) -> DownloadProgress:
        done = max((int(b.n) for b in self.byte_bars), default=0)
        total = max((int(b.total) for b in self.byte_bars if b.total), default=0) or None
        files = self.file_bar
        return DownloadProgress(self.repo_id, done, total, int(files.n) if files else 0,
                                int(files.total) if files and files.total else None)

    def finish(self) -> None:
        self.changed(force=True)


class _NullFile:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class _ProgressBar(tqdm):
    """A tqdm that draws nothing; each update feeds the shared state and checks for a stop."""

    state: _ProgressState  # set on the subclass progress_bar_class makes
    monitor_interval = 0  # no tqdm monitor thread

    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        kwargs["file"] = _NullFile()
        kwargs["disable"] = False
        super().__init__(*args, **kwargs)
        if self.unit == "B":
            self.state.byte_bars.append(self)
        else:
            self.state.file_bar = self

    def update(self, n=1):
        self.state.check_stop()
        result = super().update(n)
        self.state.changed(force=self.unit != "B")
        return result


def progress_bar_class(repo_id: str, emit: Emit, control: JobControl) -> type:
    """A tqdm class for ``snapshot_download(tqdm_class=...)`` bound to one download."""
    return type("DownloadBar", (_ProgressBar,), {"state": _ProgressState(repo_id, emit, control)})
