"""``klantsync dsr ...``: data subject requests from the command line.

Thin: parse, call :class:`~connector.dsr.DsrService`, print, return 0 (done), 1 (finished with
failures: the request stays open for ``dsr retry``; or a receipt did not verify) or 2 (bad
usage: unknown request, unknown field, bad extension). Output never holds an e-mail address:
requests are shown by id and subject id (keyed hash).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector import audit, wording
from connector.access import BUNDLE_FILES
from connector.backup import refuse_store_files
from connector.cliargs import (
    EXIT_FAILED,
    EXIT_OK,
    int_at_least,
    write_output,
)
from connector.config import Config
from connector.dsr import DsrService, DsrUsageError, RequestView, no_request
from connector.dsr_input import checked_email, checked_fields, checked_phone, phone_regions
from connector.errors import ReceiptError, StoreError
from connector.loop import run as run_loop
from connector.readmit import readmit
from connector.receipts import (
    Verification,
    document_key_id,
    listed_keys_in,
    verify_with_listing,
)
from connector.runtime import open_runtime
from connector.stages import counted
from connector.storefile import on_full_disk, store_exists

__all__ = ["register", "run"]


#: The actions that only read what the store holds: no config of theirs takes effect.
LOOKS = frozenset({"list", "show", "receipt", "verify-receipt", "public-key"})
#: The actions that call the systems, and so need their credentials (connector/cli.py
#: resolves them at load for these alone). The others read or write the store only (an
#: extension, an exemption, a readmission, a new receipt key), and run as the operator,
#: without the environment deploy/klantsync.service gives the daemon alone.
CALLS_SYSTEMS = frozenset({"erase", "access", "rectify", "retry"})
#: The actions that record a new request, and so make the store where there is none yet, as
#: `sync` does. The others find there is no store and say so, making none (:func:`_no_store`).
RECORDS = frozenset({"erase", "access", "rectify"})

CLEAR_DATA_NOTICE = (
    "The access bundle is the only place klantsync writes personal data in clear: "
    "hand it over securely, then delete it."
)


def register(subparsers: Any) -> None:
    """Add the ``dsr`` command and its actions to the top-level parser's subparsers."""
    dsr = subparsers.add_parser(
        "dsr",
        help="data subject requests: erase, access, rectify, list, receipts",
        description="Data subject requests: erasure, access and rectification in every system.",
    )
    actions = dsr.add_subparsers(dest="dsr_action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, more: str = "") -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, description=f"{help_text}. {more}" if more else help_text
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    # `--email -`: an address given as an argument is in every local user's `ps` for the
    # whole fan-out, and in the shell's history (connector.cli reads it).
    stdin = "; - reads it from standard input instead (one line), out of ps and shell history"
    again = "Asked again while the person's request is open, it goes on with that request"
    erase = action("erase", "erase a person in every system, with a signed receipt", f"{again}.")
    erase.add_argument("--email", required=True, help=f"the person's e-mail address{stdin}")
    erase.add_argument(
        "--phone",
        help="the person's phone number (also suppressed); without a country code it is "
        "read as the shop reads numbers (its mapping's default_region), so give one from "
        f"another country with its country code, e.g. +32 470 12 34 56{stdin}",
    )
    access = action(
        "access",
        "collect a person's data from every system into a bundle",
        f"{again} (when --out is the same folder).",
    )
    access.add_argument("--email", required=True, help=f"the person's e-mail address{stdin}")
    access.add_argument("--out", required=True, type=Path, help="folder to write the bundle to")
    rectify = action(
        "rectify",
        "correct canonical fields in every system that receives them",
        f"{again}: the fields join it, a field given again takes its new value, and every "
        "system is asked again.",
    )
    rectify.add_argument("--email", required=True, help=f"the person's e-mail address{stdin}")
    rectify.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a canonical field and its corrected value (repeatable); an empty value "
        "(`--set phone=`) empties the field in every system written it (not the e-mail, nor "
        "a consent, which is withdrawn at the source); `--set -` reads them from standard "
        "input, one FIELD=VALUE a line, out of the process list",
    )
    readmit = action(
        "readmit",
        "take someone erased off the suppression list (they signed up again themselves)",
        "The next sync sends them as the shop has them now. Refused while their erasure is "
        "open. Former addresses and the erased shop record stay suppressed.",
    )
    readmit.add_argument("--email", required=True, help=f"the address to take off the list{stdin}")
    readmit.add_argument("--phone", help=f"the phone number to take off the list too{stdin}")
    readmit.add_argument(
        "--reason",
        required=True,
        help="why, in your own words (stored in the audit trail; no personal data)",
    )
    listing = action("list", "list requests")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--open", action="store_true", help="only open requests")
    which.add_argument("--overdue", action="store_true", help="only open requests past deadline")
    action("show", "show one request").add_argument("id")
    retry = action("retry", "retry what is not done yet of a request (or of every open one)")
    retry.add_argument("id", nargs="?", help="request id")
    retry.add_argument("--all", action="store_true", help="every open request")
    extend = action("extend", "extend a request's deadline (two months at most, with a reason)")
    extend.add_argument("id")
    # The service refuses more than the two months Art. 12(3) allows, with the months used.
    extend.add_argument(
        "--months", type=int_at_least(1), required=True, help="1 or 2 (two at most in all)"
    )
    extend.add_argument("--reason", required=True)
    exempt = action(
        "exempt",
        "close one system's part of a request without carrying it out (a legal obligation "
        "to keep, say), with the reason the person is told",
    )
    exempt.add_argument("id")
    exempt.add_argument("--system", required=True, help="the system's name in the config")
    exempt.add_argument("--reason", required=True)
    release = action(
        "release",
        "let an erasure erase a system whose part it holds because an earlier erasure of "
        "the person exempted it (dsr exempt keeps it instead)",
    )
    release.add_argument("id")
    release.add_argument("--system", required=True, help="the system's name in the config")
    action("receipt", "print a completed request's signed receipt").add_argument("id")
    verify = action("verify-receipt", "check a receipt's Ed25519 signature")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--public-key",
        type=Path,
        help="PEM public key, or the listing of public-key --all (default: this store's)",
    )
    action("rotate-key", "replace the receipt signing key (old receipts still verify)")
    public = action("public-key", "print the public key that checks this deployment's receipts")
    public.add_argument(
        "--out", type=Path, help="write the PEM to this file instead (a file, not a directory)"
    )
    public.add_argument(
        "--all",
        action="store_true",
        help="every key the deployment signed receipts with, each retired one with when it "
        "was retired (it verifies only receipts completed by then), the one in use last",
    )


def run(args: argparse.Namespace, console: Console, config: Config) -> int:
    """Run one ``dsr`` action under ``config`` (loaded with the systems' secrets for an
    action in :data:`CALLS_SYSTEMS`); return the exit status.

    Raises:
        DsrUsageError: bad usage (exit 2), answered by :mod:`connector.cli` as every
            command's: one line on stderr, or the JSON error object under ``--json``.
    """
    if args.dsr_action not in RECORDS and not store_exists(config.store_path):
        return _no_store(args, console, config)
    if args.dsr_action in RECORDS:
        _check_request(args, config)
    return run_loop(_run(args, console, config))


def _check_request(args: argparse.Namespace, config: Config) -> None:
    """Refuse a new request's address, number or fields before the store is opened (the
    service checks them again): refused after, a store was made and bound to the key in use
    for a request never recorded, as a mistyped ``sync --flow`` no longer makes one."""
    checked_email(args.email)
    if getattr(args, "phone", None):
        checked_phone(args.phone, phone_regions(config, "cli"))
    if args.dsr_action == "rectify":
        checked_fields(config.mappings, _assignments(args.assignments))


def _no_store(args: argparse.Namespace, console: Console, config: Config) -> int:
    """No store at ``store.path`` yet: no request to list, show or act on, no one on the
    suppression list and no receipt key; said, and none made.

    A store made here, empty and bound to the key in use, looked like the real one to
    whoever ran the next command: after a lost disk, the backup of the real one was
    "another store" to ``restore``; at a mistaken ``store.path``, ``dsr retry --all`` from a
    timer said "0 still open" every night. So ``retry --all`` and the actions that need a
    store's keys (``rotate-key``, ``public-key``) are refused (exit 1), as ``backup`` and
    ``keys rotate`` are. A receipt checked with ``--public-key`` needs no store at all.

    Raises:
        DsrUsageError: an id no request has, an address on no list (exit 2).
        StoreError: what only a store can do (exit 1).
    """
    where = config.store_path
    action = args.dsr_action
    if action == "list":
        if args.json:
            print(json.dumps([]))
        else:
            console.print(f"no requests (no store at {escape(str(where))} yet)")
        return EXIT_OK
    if action == "verify-receipt":
        if args.public_key is None:
            raise DsrUsageError(
                f"no store at {where} yet, so no receipt key of its own to check with: give "
                "the deployment's with --public-key (its dsr public-key --all)"
            )
        return _verify(args, console, None)
    if action == "readmit":
        raise DsrUsageError(
            f"nothing to readmit: no store at {where} yet, so no one is on its list"
        )
    if action == "retry" and _retry_all(args):
        raise StoreError(f"{where}: there is no store yet, so no request to retry")
    if action in ("rotate-key", "public-key"):
        raise StoreError(
            f"{where}: there is no store yet, so no receipt signing key (it is made with the "
            "store, by the first sync or request)"
        )
    # show, receipt, retry, extend, exempt, release: one request, by its id.
    raise DsrUsageError(f"{no_request(args.id)} (no store at {where} yet)")


async def _run(args: argparse.Namespace, console: Console, config: Config) -> int:
    action = args.dsr_action
    async with open_runtime(config, calls_systems=action in CALLS_SYSTEMS) as rt:
        service = DsrService(rt)
        if action not in LOOKS:
            # A request is carried out under this config (its mappings say what each system
            # holds and is sent): recorded first, as `sync` and the daemon record theirs,
            # so its entries follow the config they were made under.
            audit.record_config(rt.store, rt.config)
        if action == "erase":
            # DsrService.erase in two, so a full disk in the fan-out names the request
            # recorded before it (the person on the suppression list already).
            queued = await service.queue_erase(args.email, phone=args.phone)
            recorded = (
                f"free space, then dsr retry {queued.id} finishes it: the erasure is recorded "
                "and the person is on the suppression list (a system that erased them since "
                "its last record is asked again, which is safe)"
            )
            with on_full_disk(config.store_path, recorded):
                view = await service.retry(queued.id)
            return _print_view(console, args, view)
        if action == "access":
            before = _file_identity(args.out / BUNDLE_FILES[0])
            view = await service.access(args.email, args.out)
            # Where the person's data now lies in clear, in either form: a script that
            # hands the bundle over must know where it is, and that it is to be deleted.
            # Not every completed access leaves one: none is written for a person whose
            # erasure completed while the request was open (the receipt says why). A
            # data.json the folder held before this run is an earlier request's, maybe
            # another person's: only one this run put there is named.
            after = _file_identity(args.out / BUNDLE_FILES[0])
            wrote = not view.is_open and after is not None and after != before
            written = _bundle_written(args.out) if wrote else {}
            code = _print_view(console, args, view, written)
            if not args.json and written:
                console.print(f"bundle written to {escape(str(args.out))}")
                console.print(f"[yellow]{CLEAR_DATA_NOTICE}[/]")
            return code
        if action == "rectify":
            view = await service.rectify(args.email, _assignments(args.assignments))
            return _print_view(console, args, view)
        if action == "readmit":
            done = readmit(rt, args.email, args.reason, phone=args.phone)
            if args.json:
                print(json.dumps(done.as_dict()))
            else:
                console.print(
                    f"taken off the suppression list: {', '.join(done.subject_ids)}; the next "
                    "sync sends them as the shop has them now"
                )
            return EXIT_OK
        if action == "list":
            # The text shows no system's part: none is read for it.
            views = service.list(
                open_only=args.open, overdue=args.overdue, with_systems=bool(args.json)
            )
            if args.json:
                print(json.dumps([v.as_dict() for v in views], indent=2))
            elif views:
                # One print: rich's own cost per call (~0.35 ms) was most of a listing.
                console.print("\n".join(_line(view) for view in views))
            return EXIT_OK
        if action == "show":
            found = service.get(args.id)
            if found is None:
                raise no_request(args.id)
            _print_view(console, args, found)
            return EXIT_OK
        if action == "retry":
            return await _retry(service, args, console)
        if action == "extend":
            view = service.extend(args.id, args.months, args.reason)
            _print_view(console, args, view)
            return EXIT_OK
        if action == "exempt":
            _print_view(console, args, service.exempt(args.id, args.system, args.reason))
            return EXIT_OK
        if action == "release":
            # Done once decided: the erasure there is the next run's (exit 0, as exempt).
            _print_view(console, args, service.release(args.id, args.system))
            return EXIT_OK
        if action == "receipt":
            return _receipt(service, args)
        if action == "verify-receipt":
            return _verify(args, console, service)
        if action == "rotate-key":
            old, new = service.rotate_receipt_key()
            if args.json:
                print(json.dumps({"old_key_id": old, "new_key_id": new}))
            else:
                console.print(f"receipt signing key rotated: {old} -> {new}")
            return EXIT_OK
        if action == "public-key":
            return _public_key(service, args, console)
    raise DsrUsageError(f"unknown dsr action {action!r}")  # pragma: no cover


def _public_key(service: DsrService, args: argparse.Namespace, console: Console) -> int:
    pem = service.public_key_listing() if args.all else service.public_key_pem()
    if args.out:
        # As backup --out: the key written over the master key, the config or the store
        # would lose the deployment for a public key it can print again at any time.
        refuse_store_files(service.rt.config, args.out, "--out")
        write_output(args.out, pem, option="--out", example="receipt-public-key.pem")
        if args.json:
            print(json.dumps({"written": str(args.out), "format": "pem"}))
        else:
            console.print(f"public key written to {escape(str(args.out))}")
    elif args.json:
        keys = service.listed_keys()
        listed = [
            {
                "key_id": key.key_id,
                "made_at": key.made_at,
                "retired_at": key.retired_at,
                "public_key": replace(key, retired_at=None).pem(),
            }
            # --all lists them as its PEM does, the one in use last; without, it comes first.
            for key in (keys if args.all else (keys[-1], *reversed(keys[:-1])))
        ]
        if args.all:
            print(json.dumps({"public_keys": listed}))
        else:
            print(json.dumps({"public_key": pem, "public_keys": listed}))
    else:
        print(pem, end="")
    return EXIT_OK


def _retry_all(args: argparse.Namespace) -> bool:
    """Whether ``dsr retry`` is for every open request (``--all``) rather than one id."""
    if args.all and args.id:
        raise DsrUsageError("give a request id or --all, not both")
    if not args.all and not args.id:
        raise DsrUsageError("give a request id, or --all for every open request")
    return bool(args.all)


async def _retry(service: DsrService, args: argparse.Namespace, console: Console) -> int:
    if _retry_all(args):
        with counted(console, "dsr retry: open requests", show=not args.json) as counts:
            progressed = await service.retry_open(counts=counts)
        still_open = service.list(open_only=True)
        if args.json:
            print(json.dumps({"progressed": progressed, "open": len(still_open)}))
        else:
            console.print(
                f"{wording.counted(progressed, 'request')} progressed; {len(still_open)} still open"
            )
        return EXIT_FAILED if still_open else EXIT_OK
    return _print_view(console, args, await service.retry(args.id))


def _receipt(service: DsrService, args: argparse.Namespace) -> int:
    view = service.get(args.id)
    if view is None:
        raise no_request(args.id)
    text = service.receipt(args.id)
    if text is None:
        message = f"request {args.id} is still open: no receipt yet (see dsr show {args.id})"
        if args.json:
            # One of the documented error kinds, so a script that handles those meets no
            # other; the request's status beside it tells "not yet" from a failure.
            print(json.dumps({"error": "error", "message": message, "status": view.status}))
        else:
            # Not on stdout: `dsr receipt ID > receipt.json` would hand the person this line.
            print(message, file=sys.stderr)
        return EXIT_FAILED
    # The canonical text as signed and no byte more, so `dsr receipt ID > r.json` verifies
    # as it is and hashes to the `receipt_sha256` of its `dsr.completed` audit entry. Only
    # a terminal gets a line end, for the prompt: no file or pipe holds what it shows.
    sys.stdout.write(text + "\n" if sys.stdout.isatty() else text)
    return EXIT_OK


def _verify(args: argparse.Namespace, console: Console, service: DsrService | None) -> int:
    """Check a receipt with the store's keys, or with ``--public-key`` alone where there is
    no store (``service`` None)."""
    try:
        data = args.file.read_bytes()
        pem = args.public_key.read_bytes() if args.public_key else None
    except OSError as exc:
        raise DsrUsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if pem is not None:
        # A key that is none is a mistake in the command (exit 2), not a verdict on the
        # receipt: "invalid" (exit 1) would say the receipt was checked and failed.
        try:
            listed_keys_in(pem)
        except ReceiptError as exc:
            raise DsrUsageError(f"--public-key: {exc}") from None
    if service is not None:
        result = service.verify_receipt(data, pem)
    else:
        assert pem is not None  # _no_store refuses the check without --public-key
        result = verify_with_listing(data, pem)
    if args.json:
        # The request a valid receipt is for, as the text names it; none for an invalid
        # one, whose contents nothing vouches for.
        request_id = result.receipt.get("request_id") if result.ok and result.receipt else None
        said: dict[str, object] = {
            "valid": result.ok,
            "problem": result.problem,
            "request_id": request_id,
        }
        if result.signer:
            said["signed_with"] = {
                "key_id": document_key_id(data),
                "key": result.signer,
                "made_at": result.made_at,
                "retired_at": result.retired_at,
            }
        print(json.dumps(said))
    elif result.ok:
        assert result.receipt is not None
        console.print(
            f"[green]valid[/]: receipt for request {escape(str(result.receipt.get('request_id')))}"
            + _signed_with(result, document_key_id(data))
        )
    else:
        console.print(f"[red]invalid[/]: {escape(result.problem)}")
    return EXIT_OK if result.ok else EXIT_FAILED


def _signed_with(result: Verification, key: str | None) -> str:
    """Which of the store's keys verified a receipt, with its dates, as a clause."""
    if not result.signer:
        return ""
    dates = [f"made {result.made_at}"] if result.made_at else []
    if result.retired_at:
        dates.append(f"retired {result.retired_at}")
    when = f" ({', '.join(dates)})" if dates else ""
    which = "the key in use" if result.signer == "current" else "a former key of this store"
    return f", signed with {which}, {key}{when}"


def _assignments(items: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            # The text is not echoed: without '=' it may be a value (a name, an address).
            raise DsrUsageError("--set takes FIELD=VALUE; one --set has no '='")
        fields[name.strip()] = value
    return fields


def _line(view: RequestView) -> str:
    flag = " [yellow]flagged[/]" if view.flagged else ""
    flag = " [red]overdue[/]" if view.overdue else flag
    when = f"deadline {view.deadline_shown} ({view.days_left} days left){flag}"
    if view.completed_date is not None:
        # A request done is told by when it was done, the proof it was answered in time:
        # the days "left" to a deadline long passed read as an overdue request's.
        late = " [red]late[/]" if view.completed_late else ""
        when = f"deadline {view.deadline_shown}, completed {view.completed_date}{late}"
    return f"{view.id}  {view.kind:<7} {view.status:<9} {when}  subject {view.subject_id}"


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """The file at ``path`` as told apart from one put there later (a bundle's files are
    replaced, never written into: a new inode), ``None`` when there is none."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_mtime_ns)


def _bundle_written(out_dir: Path) -> dict[str, str]:
    """What ``dsr access --json`` adds to the request: where the bundle is, kept absolute as
    the service keeps it, and that it is the only clear copy."""
    return {"bundle": str(out_dir.resolve()), "notice": CLEAR_DATA_NOTICE}


def _print_view(
    console: Console,
    args: argparse.Namespace,
    view: RequestView,
    extra: dict[str, str] | None = None,
) -> int:
    """Print a request (``extra`` joins its JSON form); 0 when it is completed, 1 when
    systems are still to be retried."""
    if args.json:
        print(json.dumps({**view.as_dict(), **(extra or {})}, indent=2))
    else:
        console.print(_line(view))
        if view.extension_reason:
            console.print(f"  extended: {escape(view.extension_reason)}")
        for system in view.systems:
            detail = f": {escape(system.detail)}" if system.detail else ""
            console.print(
                f"  {system.system}: {system.status} "
                f"({wording.counted(system.attempts, 'attempt')}){detail}"
            )
        if view.is_open:
            console.print(f"  still open; retry with: klantsync dsr retry {view.id}")
        elif view.has_receipt:
            console.print(f"  signed receipt: klantsync dsr receipt {view.id}")
    return EXIT_FAILED if view.is_open else EXIT_OK
