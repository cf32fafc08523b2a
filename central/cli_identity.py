"""``skerry`` identity commands: login, projects, users, roles, app-creds, tokens,
keys, audit. Passwords are read from the environment or a prompt, never from
the command line (where ``ps`` would show them)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from central.client import Client

COMMANDS = ("login", "projects", "users", "roles", "app-creds", "tokens", "keys", "audit")
Printer = Callable[..., None]


def _password(env: str, prompt: str) -> str:
    value = os.environ.get(env, "")
    return value or getpass.getpass(prompt)


def _stamp(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def add_parsers(sub: Any) -> None:
    login = sub.add_parser("login", help="log in; prints `export SKERRY_TOKEN=...`")
    login.add_argument("--user", required=True)
    login.add_argument("--project", required=True)

    projects = sub.add_parser("projects", help="projects (cloud admin)")
    p = projects.add_subparsers(dest="action", required=True)
    p.add_parser("list")
    for name in ("create", "show", "enable", "disable"):
        p.add_parser(name).add_argument("project", help="name (create) or id")

    users = sub.add_parser("users", help="users (cloud admin)")
    u = users.add_subparsers(dest="action", required=True)
    u.add_parser("list")
    u.add_parser("create", help="password from SKERRY_NEW_PASSWORD or a prompt").add_argument(
        "name"
    )
    for name in ("show", "enable", "disable", "revoke-tokens"):
        u.add_parser(name).add_argument("user", help="user id")

    roles = sub.add_parser("roles", help="role assignments")
    r = roles.add_subparsers(dest="action", required=True)
    r.add_parser("list").add_argument("--project", required=True, help="project id")
    for name in ("grant", "revoke"):
        c = r.add_parser(name)
        c.add_argument("role", choices=["reader", "member", "admin"])
        c.add_argument("--project", required=True, help="project id")
        c.add_argument("--user", required=True, help="user id")

    creds = sub.add_parser("app-creds", help="your application credentials")
    a = creds.add_subparsers(dest="action", required=True)
    a.add_parser("list")
    c = a.add_parser("create")
    c.add_argument("name")
    c.add_argument("--role", action="append", dest="roles", help="repeat; default all yours")
    c.add_argument("--expires-in", type=float, help="seconds until it expires")
    a.add_parser("delete").add_argument("id")

    tokens = sub.add_parser("tokens", help="tokens")
    t = tokens.add_subparsers(dest="action", required=True)
    t.add_parser("show", help="who the current token speaks for")
    t.add_parser("revoke").add_argument("token_id")

    keys = sub.add_parser("keys", help="token-signing keys (cloud admin)")
    k = keys.add_subparsers(dest="action", required=True)
    k.add_parser("list")
    k.add_parser("rotate")
    k.add_parser("retire").add_argument("kid")

    audit = sub.add_parser("audit", help="the audit trail (cloud admin)")
    au = audit.add_subparsers(dest="action", required=True)
    q = au.add_parser("list")
    q.add_argument("--since", type=float, help="seconds ago")
    q.add_argument("--user")
    q.add_argument("--action-name", dest="action_name", help='e.g. "POST /v1/servers"')
    q.add_argument("--limit", type=int, default=50)


def _me(api: Client) -> dict[str, Any]:
    return api.get("/v1/auth/token")


def run(args: argparse.Namespace, api: Client, show: Printer) -> int:
    cmd, action = args.cmd, getattr(args, "action", None)
    if cmd == "login":
        password = _password("SKERRY_PASSWORD", f"password for {args.user}: ")
        issued = api.login(args.user, password, args.project)
        if args.json:
            show(args, issued)
        else:
            print(f"export SKERRY_TOKEN={issued['token']}")
            print(f"# expires {_stamp(issued['expires_at'])}", file=sys.stderr)
        return 0
    if cmd == "projects":
        if action == "list":
            rows = api.get("/v1/projects")["projects"]
            show(args, rows, rows, ("id", "name", "enabled"))
        elif action == "create":
            show(args, api.post("/v1/projects", {"name": args.project}))
        elif action == "show":
            show(args, api.get(f"/v1/projects/{args.project}"))
        else:
            body = {"enabled": action == "enable"}
            show(args, api.patch(f"/v1/projects/{args.project}", body))
        return 0
    if cmd == "users":
        if action == "list":
            rows = api.get("/v1/users")["users"]
            show(args, rows, rows, ("id", "name", "enabled"))
        elif action == "create":
            password = _password("SKERRY_NEW_PASSWORD", f"password for {args.name}: ")
            show(args, api.post("/v1/users", {"name": args.name, "password": password}))
        elif action == "show":
            show(args, api.get(f"/v1/users/{args.user}"))
        elif action == "revoke-tokens":
            api.post(f"/v1/users/{args.user}/revoke-tokens")
            print(f"tokens of user {args.user} revoked")
        else:
            show(args, api.patch(f"/v1/users/{args.user}", {"enabled": action == "enable"}))
        return 0
    if cmd == "roles":
        if action == "list":
            rows = api.get(f"/v1/projects/{args.project}/roles")["assignments"]
            show(args, rows, rows, ("user_name", "user_id", "project_name", "role"))
            return 0
        path = f"/v1/projects/{args.project}/users/{args.user}/roles/{args.role}"
        api.call("PUT" if action == "grant" else "DELETE", path)
        print(f"role {args.role} {'granted' if action == 'grant' else 'revoked'}")
        return 0
    if cmd == "app-creds":
        base = f"/v1/users/{_me(api)['user']['id']}/application_credentials"
        if action == "list":
            rows = api.get(base)["application_credentials"]
            show(args, rows, rows, ("id", "name", "project_id", "roles", "expires_at"))
        elif action == "create":
            body: dict[str, Any] = {"name": args.name}
            if args.roles:
                body["roles"] = args.roles
            if args.expires_in:
                body["expires_at"] = time.time() + args.expires_in
            created = api.post(base, body)
            show(args, created)
            print("# the secret is shown only this once", file=sys.stderr)
        else:
            api.delete(f"{base}/{args.id}")
            print(f"application credential {args.id} deleted")
        return 0
    if cmd == "tokens":
        if action == "show":
            show(args, _me(api))
        else:
            api.delete(f"/v1/auth/tokens/{args.token_id}")
            print(f"token {args.token_id} revoked")
        return 0
    if cmd == "keys":
        if action == "list":
            rows = api.get("/v1/auth/keys")["keys"]
            show(args, rows, rows, ("kid", "state", "created_at", "public_key"))
        elif action == "rotate":
            show(args, api.post("/v1/auth/keys/rotate"))
        else:
            show(args, api.post(f"/v1/auth/keys/{args.kid}/retire"))
        return 0
    # audit
    query = [f"limit={args.limit}"]
    if args.since:
        query.append(f"since={time.time() - args.since}")
    if args.user:
        query.append(f"user={quote(args.user, safe='')}")
    if args.action_name:
        query.append(f"action={quote(args.action_name, safe='')}")
    rows = api.get("/v1/audit?" + "&".join(query))["events"]
    for row in rows:
        row["when"] = _stamp(row["at"])
    show(args, rows, rows, ("when", "user", "action", "target", "result", "source", "request_id"))
    return 0
