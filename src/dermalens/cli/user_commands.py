"""The `dermalens user ...` subcommands: staff accounts of the service, each a thin call into
`dermalens.serve.staff` (loaded inside the command: it needs the serve extra)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys


def read_password(args: argparse.Namespace) -> str:
    """From stdin's first line, an environment variable, or a prompt asked twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise SystemExit(
                f"dermalens user {args.user_command}: ${args.password_env} is unset or empty"
            )
        return value
    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit(
            f"dermalens user {args.user_command}: the two passwords differ; nothing was changed"
        )
    return first


def _user_call(call) -> int:
    from dermalens.serve.accounts import AccountError  # loaded here: it needs the serve extra

    try:
        result = call()
    except AccountError as exc:
        print(f"dermalens user: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def run_user_add(args: argparse.Namespace) -> int:
    from dermalens.serve import staff  # loaded here: it needs the serve extra

    password = read_password(args)
    return _user_call(lambda: staff.add_user(args.username, args.role, password))


def run_user_password(args: argparse.Namespace) -> int:
    from dermalens.serve import staff  # loaded here: it needs the serve extra

    password = read_password(args)
    return _user_call(lambda: staff.set_user_password(args.username, password))


def run_user_state(args: argparse.Namespace) -> int:
    from dermalens.serve import staff  # loaded here: it needs the serve extra

    disabled = args.user_command == "disable"
    return _user_call(lambda: staff.set_user_disabled(args.username, disabled))


def run_user_list(args: argparse.Namespace) -> int:
    from dermalens.serve import staff  # loaded here: it needs the serve extra

    return _user_call(staff.list_users)
