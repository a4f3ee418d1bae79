"""`macfinetune login` / `logout`: the Hugging Face token in the system keychain."""

from __future__ import annotations

import sys

from macfinetune.cli.common import EXIT_OK


def add_parsers(sub) -> None:
    sub.add_parser("login", help="store a Hugging Face token in the system keychain (read from stdin)")
    sub.add_parser("logout", help="remove the Hugging Face token from the system keychain")


def cmd_login(args) -> int:
    import getpass

    from macfinetune.core.secrets import save_hf_token

    token = getpass.getpass("Hugging Face token: ") if sys.stdin.isatty() else sys.stdin.readline()
    save_hf_token(token)
    print("token saved in the system keychain")
    return EXIT_OK


def cmd_logout(args) -> int:
    from macfinetune.core.secrets import clear_hf_token

    print("token removed" if clear_hf_token() else "no token was stored")
    return EXIT_OK


COMMANDS = {"login": cmd_login, "logout": cmd_logout}
