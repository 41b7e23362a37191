"""`strata`: manage hosts, storages, images, volumes and jobs of a Strata controller."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any

from cli.client import ApiError, Client, read_token

DEFAULT_URL = "http://127.0.0.1:8640"

COLUMNS: dict[str, tuple[str, ...]] = {
    "hosts": ("id", "name", "state", "enrolled", "address", "agent_version"),
    "primary-storages": ("id", "name", "type", "state", "capacity", "allocation_threshold",
                         "tags", "hosts"),
    "backup-storages": ("id", "name", "type", "state", "capacity_available"),
    "images": ("id", "name", "state", "format", "size", "virtual_size"),
    "volumes": ("id", "name", "state", "size", "image_id", "primary_storage_id", "access"),
    "snapshots": ("id", "name", "state", "volume_id", "parent_id", "actual_size"),
    "snapshot-backups": ("id", "state", "snapshot_id", "volume_id", "backup_storage_id",
                         "size"),
    "jobs": ("id", "kind", "state", "progress", "resource_id", "error"),
    "tokens": ("id", "name", "role", "revoked_at"),
    "audit": ("at", "token_name", "method", "route", "resource_id", "status", "code"),
}
# Byte counts shown for people in tables; --json keeps the bytes.
SIZE_COLUMNS = {"size", "virtual_size", "actual_size", "capacity_available"}
# The collections whose objects have names: wherever the CLI takes one of their ids, it
# takes a name too.
NAMED = {"hosts", "primary-storages", "backup-storages", "images", "volumes", "snapshots",
         "tokens"}
# Arguments that refer to an object of another collection.
REFERENCES: dict[str, str] = {
    "primary_storage": "primary-storages", "backup_storage": "backup-storages",
    "image": "images", "from_volume": "volumes", "volume_id": "volumes",
    "snapshot_id": "snapshots", "snapshot": "snapshots", "from_snapshot": "snapshots",
    "host_id": "hosts", "server_host": "hosts", "host": "hosts",
    "primary_storage_id": "primary-storages",
}


def human_size(n: int) -> str:
    """Binary units, one decimal where it matters: 33554432 -> 32M."""
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            break
        value /= 1024
    return f"{value:.1f}".removesuffix(".0") + unit

RECONCILE_TABLES: dict[str, tuple[str, ...]] = {
    "orphans": ("path", "kind", "size"),
    "missing": ("resource_type", "id", "name", "path"),
    "size_mismatches": ("path", "resource_type", "id", "expected", "found"),
    "quarantined": ("path", "moved_to"),
}
CAPABILITY_TABLES: dict[str, tuple[str, ...]] = {
    "primary_storage_types": ("type", "description"),
    "backup_storage_types": ("type", "description"),
    "matrix": ("primary", "backup", "hypervisor", "directions"),
}


def _cell(column: str, value: Any) -> str:
    if isinstance(value, dict) and {"code", "message"} <= value.keys():
        return f"{value['code']}: {value['message']}"
    if isinstance(value, dict) and "allocated" in value:
        return (f"{human_size(value['allocated'])}/{human_size(value['total'])} "
                f"x{value['overprovision_factor']:g}")
    if isinstance(value, list):
        return ",".join(v.get("state", "?") if isinstance(v, dict) else str(v) for v in value)
    if column == "allocation_threshold" and isinstance(value, float | int):
        return f"{value:g}%"
    if column in SIZE_COLUMNS and isinstance(value, int):
        return human_size(value)
    return "" if value is None else str(value)


def resolve(client: Client, collection: str, value: str) -> str:
    """The id of the object named `value`, or `value` itself when no object has that name
    (then it is an id, and the API says if there is no such object). A name several
    objects share is an error that lists them."""
    query = urllib.parse.urlencode({"name": value, "limit": 50})
    found = client.get(f"/v1/{collection}?{query}")["items"]
    if len(found) > 1:
        ids = ", ".join(str(item["id"]) for item in found)
        raise ApiError(0, "ambiguous_name",
                       f"{len(found)} {collection} are named {value!r} ({ids}); give an id")
    return str(found[0]["id"]) if found else value


def resolve_names(client: Client, collection: str, args: argparse.Namespace) -> None:
    """Replaces the names among the arguments with ids."""
    if collection in NAMED and isinstance(getattr(args, "id", None), str):
        args.id = resolve(client, collection, args.id)
    for attr, referenced in REFERENCES.items():
        value = getattr(args, attr, None)
        if isinstance(value, str):
            setattr(args, attr, resolve(client, referenced, value))
        elif isinstance(value, list):
            setattr(args, attr, [resolve(client, referenced, v) for v in value])


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def progress_bar(job: dict[str, Any]) -> None:
    width = 30
    done = int(width * job["progress"] / 100)
    bar = "#" * done + "-" * (width - done)
    end = "\n" if job["state"] in ("succeeded", "failed") else ""
    print(f"\r{job['kind']:<24} [{bar}] {job['progress']:5.1f}% {job['state']}", end=end,
          file=sys.stderr, flush=True)


class Cli:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = Client(args.url, read_token(args.token_file))

    def out(self, data: Any, resource: str | None = None) -> None:
        if self.args.json:
            print(json.dumps(data, indent=2))
        elif resource and isinstance(data, dict) and "items" in data:
            print_table(data["items"], COLUMNS[resource])
            if data.get("next"):
                shown = (f"{len(data['items'])} of {data['total']}"
                         if data.get("total") is not None else f"{len(data['items'])}")
                print(f"({shown}; next page: --after {data['next']})")
        elif resource and isinstance(data, dict):
            print_table([data], COLUMNS[resource])
        else:
            print(json.dumps(data, indent=2))

    def submitted(self, accepted: dict[str, Any], show: bool = True) -> int:
        """Prints the job, or with --wait follows it to the end (and shows the object it
        made or changed, or with `show` off, its result); non-zero if it failed."""
        if not self.args.wait:
            self.out(accepted) if self.args.json else print(
                f"job {accepted['job_id']} started for {accepted['resource_type']} "
                f"{accepted['resource_id']}")
            return 0
        job = self.client.wait_job(accepted["job_id"],
                                   on_progress=None if self.args.json else progress_bar)
        if self.args.json:
            self.out(job)
        elif job["state"] == "failed":
            print(f"failed: {job['error']['code']}: {job['error']['message']}", file=sys.stderr)
        elif show:
            self.show_done(accepted)
        elif job.get("result"):
            print(json.dumps(job["result"], indent=2))
        return 0 if job["state"] == "succeeded" else 1

    def show_done(self, accepted: dict[str, Any]) -> None:
        """The object a finished job made or changed, as `show` prints it; a line when it
        is gone (deleted)."""
        collection = f"{str(accepted['resource_type']).replace('_', '-')}s"
        if collection in COLUMNS:
            try:
                self.out(self.client.get(f"/v1/{collection}/{accepted['resource_id']}"),
                         collection)
                return
            except ApiError as exc:
                if exc.status != 404:
                    raise
        print(f"{accepted['resource_type']} {accepted['resource_id']} done")

    def reconcile_report(self, collection: str, store_id: str) -> int:
        """The report as tables (or JSON); 0 when the storage and the rows agree."""
        report = self.client.get(f"/v1/{collection}/{store_id}/reconcile")
        if self.args.json:
            self.out(report)
        else:
            print(f"{report['objects']} objects listed through host {report['host_id']}, "
                  f"{len(report['in_progress'])} in progress")
            for key, columns in RECONCILE_TABLES.items():
                print(f"{key.replace('_', ' ').upper()}: {len(report[key])}")
                if report[key]:
                    print_table(report[key], columns)
        findings = report["orphans"] or report["missing"] or report["size_mismatches"]
        return 1 if findings else 0

    def listing(self, resource: str, filters: list[str]) -> int:
        query = [f"limit={self.args.limit}", f"offset={self.args.offset}"]
        # A table says how many rows there are in all; a keyset page, how far it got.
        query.append(f"after={self.args.after}" if self.args.after else "count=true")
        for f in filters:
            if "=" not in f:
                raise ApiError(0, "invalid_input", f"filter {f!r} is not KEY=VALUE")
            query.append(f)
        self.out(self.client.get(f"/v1/{resource}?{'&'.join(query)}"), resource)
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description=__doc__)
    p.add_argument("--url", default=os.environ.get("STRATA_URL", DEFAULT_URL),
                   help=f"controller URL (env STRATA_URL, default {DEFAULT_URL})")
    p.add_argument("--token-file",
                   help="file holding the API token (default: $STRATA_TOKEN, else "
                        "$STRATA_STATE_DIR/admin-token, else ./state/admin-token)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = p.add_subparsers(dest="resource", required=True)

    def resource(name: str, aliases: list[str]) -> argparse._SubParsersAction[Any]:
        r = sub.add_parser(name, aliases=aliases, help=f"manage {name}")
        actions = r.add_subparsers(dest="action", required=True)
        ls = actions.add_parser("list", aliases=["ls"])
        ls.add_argument("filters", nargs="*", help="KEY=VALUE filters, e.g. state=ready")
        ls.add_argument("--limit", type=int, default=50)
        ls.add_argument("--offset", type=int, default=0)
        ls.add_argument("--after", help="the cursor a previous page printed (keyset paging)")
        show = actions.add_parser("show")
        show.add_argument("id", help="id (or name)")
        show.add_argument("--field", help="print only this field's value, e.g. path")
        return actions

    def waitable(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--wait", action="store_true", help="follow the job to its end")
        return parser

    hosts = resource("hosts", ["host"])
    add = waitable(hosts.add_parser(
        "add", help="register a host; prints its one-time join token for the agent's "
                    "join-token file"))
    add.add_argument("name")
    add.add_argument("address", help="agent URL, e.g. https://10.0.0.5:8641")
    add.add_argument("--initiator-iqn", help="iSCSI initiator name (default: the agent's)")
    hosts.add_parser("join-token", help="make a new join token (printed once) to enrol the "
                                        "host's agent again").add_argument("id")
    hosts.add_parser("revoke", help="revoke the host agent's credential").add_argument("id")
    waitable(hosts.add_parser("reconnect")).add_argument("id")
    net = hosts.add_parser("network", help="the host's interfaces and routes to its storage "
                                           "servers, as its agent sees them")
    net.add_argument("id")
    net.add_argument("--server", action="append", default=[],
                     help="also the route to this server (repeatable)")
    waitable(hosts.add_parser("delete")).add_argument("id")

    ps = resource("primary-storages", ["ps", "primary-storage"])
    c = waitable(ps.add_parser("create"))
    c.add_argument("name")
    c.add_argument("--type", default="local", help="local, nfs or iscsi (see capabilities)")
    c.add_argument("--path", help="local/iscsi: the directory")
    config_options(c, "e.g. server=10.0.0.8, export=/srv/nfs, mode=libnfs")
    c.add_argument("--host", action="append", default=[],
                   help="host id to attach (at least one; repeat for more)")
    c.add_argument("--server-host", help="iscsi: the storage server's host id")
    c.add_argument("--portal", help="iscsi: HOST:PORT initiators log in at")
    c.add_argument("--chap", action="store_true", help="iscsi: protect targets with CHAP")
    c.add_argument("--overprovision", type=float, default=1.0)
    allocation_options(c)
    u = ps.add_parser("update", help="change the allocation threshold or the tags")
    u.add_argument("id")
    allocation_options(u)
    u.add_argument("--no-tags", action="store_true", help="remove every tag")
    for verb in ("attach", "detach"):
        a = waitable(ps.add_parser(verb))
        a.add_argument("id")
        a.add_argument("host_id")
    waitable(ps.add_parser("delete")).add_argument("id")
    mt = waitable(ps.add_parser("maintain", help="put in maintenance: no new work, running "
                                                 "jobs end first, hosts release it"))
    mt.add_argument("id")
    mt.add_argument("--drain-timeout", type=float, default=300.0,
                    help="seconds to wait for running jobs on it (default 300)")
    waitable(ps.add_parser("cancel-maintain", help="end maintenance: hosts attach it again "
                                                   "and report its capacity")).add_argument("id")
    waitable(ps.add_parser("reconcile", help="compare its files with the rows; with --wait, "
                                             "print the report")).add_argument("id")
    ps.add_parser("report", help="the last reconcile report: orphans, missing files, size "
                                 "mismatches").add_argument("id")
    q = waitable(ps.add_parser("quarantine", help="move orphans of the last report into the "
                                                  "storage's quarantine directory"))
    q.add_argument("id")
    q.add_argument("paths", nargs="+", help="orphan paths as the report names them")
    gc = ps.add_parser("cache-gc", help="image cache collection: the watermarks and the "
                                        "last run; with --high/--low, set the watermarks")
    gc.add_argument("id")
    gc.add_argument("--high", type=float, help="percent of the disk used above which "
                                               "unused caches go")
    gc.add_argument("--low", type=float, help="percent of the disk used to bring it to")
    gc_run = waitable(ps.add_parser("cache-gc-run", help="collect unused image caches now"))
    gc_run.add_argument("id")
    gc_run.add_argument("--dry-run", action="store_true", help="only show what would go")

    bs = resource("backup-storages", ["bs", "backup-storage"])
    c = waitable(bs.add_parser("create"))
    c.add_argument("name")
    c.add_argument("--type", default="dir", help="dir, sftp or s3 (see capabilities)")
    c.add_argument("--path", help="dir/sftp: the directory")
    config_options(c, "e.g. host=10.0.0.9 or bucket=images")
    waitable(bs.add_parser("delete")).add_argument("id")
    waitable(bs.add_parser("reconcile", help="compare its files with the rows; with --wait, "
                                             "print the report")).add_argument("id")
    bs.add_parser("report", help="the last reconcile report").add_argument("id")

    images = resource("images", ["image"])
    r = waitable(images.add_parser("register"))
    r.add_argument("name")
    r.add_argument("source_url", metavar="URL", nargs="?", help="http(s) URL of the image")
    r.add_argument("--from-volume", help="make the image of this volume instead")
    r.add_argument("--from-snapshot", help="make the image of this snapshot instead")
    r.add_argument("--backup-storage", required=True, help="backup storage (name or id)")
    r.add_argument("--format", choices=["qcow2", "raw"])
    r.add_argument("--sha256")
    waitable(images.add_parser("delete")).add_argument("id")

    volumes = resource("volumes", ["volume"])
    c = waitable(volumes.add_parser("create"))
    c.add_argument("name")
    c.add_argument("--primary-storage", help="primary storage (name or id); without it the "
                                             "allocator picks one (see --tag)")
    c.add_argument("--tag", action="append", default=[], dest="tags",
                   help="without --primary-storage: a tag the picked storage must carry "
                        "(repeatable)")
    c.add_argument("--image", help="image (name or id): make a linked-clone root volume")
    c.add_argument("--snapshot", help="snapshot (name or id): a copy of it, on its storage")
    c.add_argument("--backup", help="snapshot backup id: restore it onto the storage")
    c.add_argument("--size", help="bytes, or with a K/M/G/T suffix")
    d = waitable(volumes.add_parser("delete"))
    d.add_argument("id")
    d.add_argument("--cascade", action="store_true", help="delete its snapshots too")
    r = waitable(volumes.add_parser("revert", help="go back to one of its snapshots"))
    r.add_argument("id")
    r.add_argument("snapshot_id")
    g = waitable(volumes.add_parser("resize", help="grow a volume (never shrinks)"))
    g.add_argument("id")
    g.add_argument("size", help="the new size: bytes, or with a K/M/G/T suffix")
    m = waitable(volumes.add_parser("migrate", help="move to another primary storage"))
    m.add_argument("id")
    m.add_argument("primary_storage_id", help="the destination primary storage id")
    for verb in ("grant", "revoke"):
        a = waitable(volumes.add_parser(verb, help=f"{verb} a host's access (iSCSI)"))
        a.add_argument("id")
        a.add_argument("host_id")
    a = waitable(volumes.add_parser("attach", help="plug into a libvirt domain on a host"))
    a.add_argument("id")
    a.add_argument("--host", required=True, help="host id")
    a.add_argument("--domain", required=True, help="libvirt domain name")
    a = waitable(volumes.add_parser("detach", help="unplug from its domain"))
    a.add_argument("id")
    a.add_argument("--timeout", type=float, default=30,
                   help="seconds the guest has to release the disk")

    snapshots = resource("snapshots", ["snapshot"])
    t = waitable(snapshots.add_parser("take", help="take a snapshot of a volume"))
    t.add_argument("volume_id")
    t.add_argument("name")
    waitable(snapshots.add_parser("delete", help="delete one, merging its data")
             ).add_argument("id")
    b = waitable(snapshots.add_parser("backup", help="back one up to a backup storage"))
    b.add_argument("id")
    b.add_argument("--backup-storage", required=True, help="backup storage id")
    snapshots.add_parser("backups", help="list a snapshot's backups").add_argument("id")

    backups = resource("snapshot-backups", ["backups", "backup"])
    waitable(backups.add_parser("delete", help="delete it from its backup storage")
             ).add_argument("id")

    jobs = resource("jobs", ["job"])
    w = jobs.add_parser("wait")
    w.add_argument("id")
    waitable(jobs.add_parser(
        "cancel", help="cancel a running job: its agent tasks stop and its resource is "
                       "rolled back")).add_argument("id")
    tokens = resource("tokens", ["token"])
    t = tokens.add_parser("create", help="make an API token; it is printed once")
    t.add_argument("name")
    t.add_argument("--role", choices=["reader", "operator", "admin"], default="reader")
    tokens.add_parser("revoke").add_argument("id")
    resource("audit", [])
    sub.add_parser("capabilities", help="storage types and the primary x backup matrix")
    return p


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ApiError(0, "invalid_input", f"invalid size {text!r}") from None


def config_options(parser: argparse.ArgumentParser, examples: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a setting, {examples}")
    parser.add_argument("--secret-file", action="append", default=[], metavar="KEY=FILE",
                        help="a credential read from a file (never from the command line), "
                             "e.g. private_key=~/.ssh/strata or secret_key=./s3.secret")


def store_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {"path": args.path} if args.path else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ApiError(0, "invalid_input", f"--set {item!r} is not KEY=VALUE")
        config[key] = int(value) if value.isdigit() else value
    for item in args.secret_file:
        key, sep, path = item.partition("=")
        if not sep:
            raise ApiError(0, "invalid_input", f"--secret-file {item!r} is not KEY=FILE")
        try:
            with open(os.path.expanduser(path)) as f:
                value = f.read()
        except OSError as exc:
            raise ApiError(0, "invalid_input", f"--secret-file {item!r}: {exc}") from None
        # A private key keeps its layout; other secrets are one line.
        config[key] = value if key == "private_key" else value.strip()
    return config


def allocation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float,
                        help="allocation threshold: percent of the over-provisioned total "
                             "past which new allocations are refused (default 90)")
    parser.add_argument("--tag", action="append", dest="tags",
                        help="a storage tag (repeatable; replaces the tags on update)")


def allocation_body(args: argparse.Namespace) -> dict[str, Any]:
    """The threshold and tags given on the command line, and only those."""
    body: dict[str, Any] = {}
    if args.threshold is not None:
        body["allocation_threshold"] = args.threshold
    if args.tags:
        body["tags"] = args.tags
    return body


def run(args: argparse.Namespace) -> int:
    cli = Cli(args)
    c = cli.client
    res = {"host": "hosts", "ps": "primary-storages", "primary-storage": "primary-storages",
           "bs": "backup-storages", "backup-storage": "backup-storages", "image": "images",
           "volume": "volumes", "job": "jobs", "token": "tokens",
           "snapshot": "snapshots", "backups": "snapshot-backups",
           "backup": "snapshot-backups"}.get(args.resource, args.resource)
    action = {"ls": "list"}.get(getattr(args, "action", ""), getattr(args, "action", ""))
    if res == "capabilities":
        capabilities = c.get("/v1/capabilities")
        if args.json:
            cli.out(capabilities)
            return 0
        for key, columns in CAPABILITY_TABLES.items():
            print(key.replace("_", " ").upper())
            print_table(capabilities[key], columns)
            print()
        return 0
    resolve_names(c, res, args)
    if action == "list":
        return cli.listing(res, args.filters)
    if action == "show":
        shown = c.get(f"/v1/{res}/{args.id}")
        if args.field is None:
            cli.out(shown, res)
        elif args.field not in shown:
            raise ApiError(0, "invalid_input", f"{res} have no field {args.field!r}; they "
                                               f"have {', '.join(sorted(shown))}")
        else:
            print(shown[args.field] if isinstance(shown[args.field], str)
                  else json.dumps(shown[args.field]))
        return 0
    if res == "tokens":
        if action == "create":
            made = c.post("/v1/tokens", {"name": args.name, "role": args.role})
            cli.out(made) if args.json else print(made["token"])
        else:
            cli.out(c.delete(f"/v1/tokens/{args.id}"), res)
        return 0
    if action == "delete":
        cascade = "?cascade=true" if getattr(args, "cascade", False) else ""
        return cli.submitted(c.delete(f"/v1/{res}/{args.id}{cascade}"))
    if res == "jobs" and action == "cancel":
        job = c.delete(f"/v1/jobs/{args.id}")
        if args.wait:
            job = c.wait_job(args.id)
        cli.out(job, None if args.json else "jobs")
        return 0
    if res == "jobs" and action == "wait":
        job = c.wait_job(args.id, on_progress=None if args.json else progress_bar)
        cli.out(job, None if args.json else "jobs")
        return 0 if job["state"] == "succeeded" else 1
    if res == "hosts":
        if action == "add":
            body = {"name": args.name, "address": args.address}
            if args.initiator_iqn:
                body["initiator_iqn"] = args.initiator_iqn
            accepted = c.post("/v1/hosts", body)
            if not args.json:
                print(accepted["join_token"], flush=True)
                print("put this join token in the agent's join-token file (mode 0600); the "
                      "job enrols the agent once it is there", file=sys.stderr)
            return cli.submitted(accepted)
        if action == "join-token":
            made = c.post(f"/v1/hosts/{args.id}/join-token")
            cli.out(made) if args.json else print(made["join_token"])
            return 0
        if action == "revoke":
            cli.out(c.post(f"/v1/hosts/{args.id}/revoke"), res)
            return 0
        if action == "network":
            query = urllib.parse.urlencode([("server", s) for s in args.server])
            cli.out(c.get(f"/v1/hosts/{args.id}/network?{query}"))
            return 0
        return cli.submitted(c.post(f"/v1/hosts/{args.id}/reconnect"))
    if res in ("primary-storages", "backup-storages") and action == "report":
        return cli.reconcile_report(res, args.id)
    if res in ("primary-storages", "backup-storages") and action == "reconcile":
        status = cli.submitted(c.post(f"/v1/{res}/{args.id}/reconcile"), show=False)
        return cli.reconcile_report(res, args.id) if args.wait and not status else status
    if res == "primary-storages":
        if action == "create":
            config = store_config(args)
            if args.type == "iscsi":
                config |= {"server_host_id": args.server_host, "portal": args.portal,
                           "chap": args.chap}
            body = {"name": args.name, "type": args.type, "config": config,
                    "hosts": args.host, "overprovision_factor": args.overprovision}
            return cli.submitted(c.post("/v1/primary-storages", body | allocation_body(args)))
        if action == "update":
            changes = allocation_body(args) | ({"tags": []} if args.no_tags else {})
            cli.out(c.request("PATCH", f"/v1/primary-storages/{args.id}", changes), res)
            return 0
        if action == "cache-gc":
            path = f"/v1/primary-storages/{args.id}/cache-gc"
            if args.high is not None or args.low is not None:
                settings = c.get(path)["settings"]
                for key, value in (("high_watermark", args.high), ("low_watermark", args.low)):
                    if value is not None:
                        settings[key] = value
                cli.out(c.request("PUT", path, settings))
            else:
                cli.out(c.get(path))
            return 0
        if action == "cache-gc-run":
            status = cli.submitted(c.post(f"/v1/primary-storages/{args.id}/cache-gc/run",
                                          {"dry_run": args.dry_run}), show=False)
            if args.wait and not status and not args.json:
                print_table(c.get(f"/v1/primary-storages/{args.id}/cache-gc")["last_run"]
                            ["removed"], ("cache_id", "image_name", "path", "size",
                                          "last_used_at"))
            return status
        if action == "maintain":
            return cli.submitted(c.post(f"/v1/primary-storages/{args.id}/maintain",
                                        {"drain_timeout": args.drain_timeout}))
        if action == "cancel-maintain":
            return cli.submitted(c.post(f"/v1/primary-storages/{args.id}/cancel-maintain"))
        if action == "quarantine":
            return cli.submitted(c.post(f"/v1/primary-storages/{args.id}/reconcile/quarantine",
                                        {"paths": args.paths}), show=False)
        return cli.submitted(c.post(f"/v1/primary-storages/{args.id}/{action}",
                                    {"host_id": args.host_id}))
    if res == "backup-storages":
        return cli.submitted(c.post("/v1/backup-storages", {
            "name": args.name, "type": args.type, "config": store_config(args)}))
    if res == "images":
        body = {"name": args.name, "backup_storage_id": args.backup_storage}
        body |= ({"volume_id": args.from_volume} if args.from_volume
                 else {"snapshot_id": args.from_snapshot} if args.from_snapshot
                 else {"url": args.source_url})
        body |= {k: v for k, v in (("format", args.format), ("sha256", args.sha256)) if v}
        return cli.submitted(c.post("/v1/images", body))
    if res == "snapshots" and action == "backup":
        return cli.submitted(c.post(f"/v1/snapshots/{args.id}/backups",
                                    {"backup_storage_id": args.backup_storage}))
    if res == "snapshots" and action == "backups":
        cli.out(c.get(f"/v1/snapshots/{args.id}/backups"), "snapshot-backups")
        return 0
    if res == "snapshots":
        return cli.submitted(c.post(f"/v1/volumes/{args.volume_id}/snapshots",
                                    {"name": args.name}))
    if res == "volumes" and action == "revert":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/revert",
                                    {"snapshot_id": args.snapshot_id}))
    if res == "volumes" and action == "grant":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/access", {"host_id": args.host_id}))
    if res == "volumes" and action == "resize":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/resize",
                                    {"size": parse_size(args.size)}))
    if res == "volumes" and action == "attach":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/attach",
                                    {"host_id": args.host, "domain": args.domain}))
    if res == "volumes" and action == "detach":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/detach",
                                    {"timeout": args.timeout}))
    if res == "volumes" and action == "migrate":
        return cli.submitted(c.post(f"/v1/volumes/{args.id}/migrate",
                                    {"primary_storage_id": args.primary_storage_id}))
    if res == "volumes" and action == "revoke":
        return cli.submitted(c.delete(f"/v1/volumes/{args.id}/access/{args.host_id}"))
    if res == "volumes":
        body = {"name": args.name}
        if args.primary_storage:
            body["primary_storage_id"] = args.primary_storage
        if args.tags:
            body["storage_tags"] = args.tags
        for key, value in (("image_id", args.image), ("snapshot_id", args.snapshot),
                           ("backup_id", args.backup)):
            if value:
                body[key] = value
        if args.size:
            body["size"] = parse_size(args.size)
        return cli.submitted(c.post("/v1/volumes", body))
    raise AssertionError(f"unhandled command {res} {action}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(run(args))
    except ApiError as exc:
        if args.json:
            print(json.dumps({"code": exc.code, "message": exc.message}))
        else:
            print(f"strata: {exc.code}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
