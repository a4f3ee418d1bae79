"""Upload a folder to a Hugging Face model repository: one file at a time (progress, a stop check
between files), then one commit, so a stopped or failed upload leaves no half-uploaded model.

1. The repository is created (private unless asked) when it does not exist yet.
2. Each file is pre-uploaded (``HfApi.preupload_lfs_files``: large files go to storage, not yet
   into the repository); a Progress event after each; ``check()`` may raise to stop.
3. One ``create_commit`` with every file makes them appear together.
If anything fails before 3., a repository created in 1. is deleted again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from macfinetune.core.events import Progress, Stage
from macfinetune.core.problems import Problem, ProblemError


def upload_folder(folder: Path, repo_id: str, *, token: str | None, private: bool = True,
                  endpoint: str | None = None, message: str = "Upload from macfinetune",
                  emit: Callable[[object], None] = lambda e: None, check: Callable[[], None] = lambda: None) -> str:
    """Upload every file under ``folder`` to ``repo_id``; returns the repository's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    created = False
    try:
        created = not api.repo_exists(repo_id)
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        operations, done = [], 0
        for path in files:
            check()
            op = CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            api.preupload_lfs_files(repo_id, additions=[op])
            operations.append(op)
            done += path.stat().st_size
            emit(Progress("export", done, total, f"uploaded {op.path_in_repo}"))
        check()
        emit(Stage("export", f"Committing {len(operations)} files to {repo_id}"))
        api.create_commit(repo_id, operations, commit_message=message)
    except BaseException as e:
        if created:
            _delete_quietly(api, repo_id)
        if isinstance(e, Exception) and _is_hub_error(e):
            raise _upload_problem(repo_id, e) from None
        raise
    return url


def check_reachable(repo_id: str, *, token: str | None, endpoint: str | None = None) -> None:
    """Before the model is fused for an upload: the hub answers (network, offline mode, token) or the export stops
    here, in seconds, saying why."""
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=endpoint, token=token).repo_exists(repo_id)
    except Exception as e:
        if _is_hub_error(e):
            raise _upload_problem(repo_id, e) from None
        raise


def _delete_quietly(api, repo_id: str) -> None:
    try:
        api.delete_repo(repo_id)
    except Exception:  # the upload's own error is the one to report
        pass


def _is_hub_error(error: Exception) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("huggingface_hub", "httpx", "requests")) or isinstance(error, OSError)


def _upload_problem(repo_id: str, error: Exception) -> ProblemError:
    from macfinetune.backend.hub import hub_reason

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    name = type(error).__name__
    if "401" in text or "403" in text or "Unauthorized" in text:
        reason = "the hub refused the token (log in again with `macfinetune login`, with a token that can write)"
    elif "Offline" in name or "LocalEntryNotFound" in name:
        reason = "offline mode is on (HF_HUB_OFFLINE is set); unset it to upload"
    elif "Connect" in name or "Connect" in text or isinstance(error, OSError):
        reason = "no network connection to huggingface.co; nothing was uploaded, export again when online"
    else:
        reason = hub_reason(error)
    return ProblemError(Problem(f"could not upload to {repo_id!r}: {reason}", field="dest", value=repo_id))
