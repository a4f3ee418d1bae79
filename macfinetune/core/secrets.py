"""The Hugging Face token lives in the system keychain, never in logs, recipes or run folders."""

from __future__ import annotations

from macfinetune.core.problems import Problem, ProblemError

SERVICE = "macfinetune"
ACCOUNT = "huggingface-token"


def save_hf_token(token: str) -> None:
    import keyring
    from keyring.errors import KeyringError

    token = token.strip()
    if not token:
        raise ProblemError(Problem("the token is empty", field="token"))
    try:
        keyring.set_password(SERVICE, ACCOUNT, token)
    except KeyringError as e:
        raise ProblemError(
            Problem(f"no system keychain to keep the token in ({type(e).__name__}); "
                    "set HF_TOKEN in the environment instead", field="token")
        ) from None


def load_hf_token() -> str | None:
    """The stored token, or None (then huggingface_hub falls back to HF_TOKEN or its own login)."""
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(SERVICE, ACCOUNT)
    except KeyringError:
        return None


def clear_hf_token() -> bool:
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(SERVICE, ACCOUNT)
    except (PasswordDeleteError, KeyringError):
        return False
    return True


def token_store_available() -> bool:
    """Whether a real keychain backend is present (the macOS Keychain on a Mac; a frozen app that
    lost keyring's backends would fall back to one that refuses every write)."""
    import keyring
    from keyring.backends import fail

    try:
        return not isinstance(keyring.get_keyring(), fail.Keyring)
    except Exception:  # a broken backend is the same as none to the user
        return False
