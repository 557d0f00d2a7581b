"""The command layer: parse arguments, hand each command to its module, turn errors into
exit 0 / 1 / 2.

Exit status: 0 done; 1 finished with failures (details printed); 2 bad usage or bad
configuration (the message names the file, key and what is wrong). Every reporting command
takes ``--json``. The commands themselves live in ``cli_sync``, ``cli_status``, ``cli_check``,
``cli_dsr``, ``cli_keys``, ``cli_backup``, ``cli_health`` and ``cli_accountability``;
nothing in any of them holds logic the daemon or admin API would also need.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from connector import (
    __version__,
    cli_accountability,
    cli_backup,
    cli_check,
    cli_dsr,
    cli_health,
    cli_keys,
    cli_status,
    cli_sync,
)
from connector.cliargs import EXIT_FAILED, EXIT_OK, EXIT_PIPE, EXIT_USAGE, int_at_least, make_folder
from connector.config import Config, load_config
from connector.coredump import forbid_core_dumps
from connector.crypto import generate_master_key
from connector.dsr_views import DsrUsageError
from connector.errors import (
    ConfigError,
    KlantsyncError,
    StoreError,
    StoreFullError,
    StorePathError,
)
from connector.lock import daemon_running, syncing
from connector.logs import debug_wanted, mask_contact_details, redact, setup_logging
from connector.loop import run as run_loop
from connector.runtime import open_runtime, settle_heap
from connector.storefile import failure, on_full_disk

__all__ = ["CONFIG_VARIABLE", "main", "print_report", "progress_bar"]

# The sync summary and the progress bar are shared with the demo (and were public here).
print_report = cli_sync.print_report
progress_bar = cli_sync.progress_bar


class _UsageExit(SystemExit):
    """argparse's exit 2 for bad usage, keeping its message for a ``--json`` answer."""

    def __init__(self, code: int | str | None, message: str) -> None:
        super().__init__(code)
        self.message = message


#: What a usage error says in place of a word it refused.
_NOT_REPEATED = "what was given is not repeated: it may be a key or a person's details"
#: A word shown as the option it names: lower case and short, as this CLI's options are (a
#: master key may start with "-" too, but is 43 characters of mixed case).
_OPTION_NAME = re.compile(r"--?[a-z][a-z0-9-]{0,30}")
#: argparse's messages that quote a value as given (argparse 3.11's wording), and what
#: takes the value's place.
_QUOTING = (
    # Greedy: the last "(choose from" is argparse's, whatever the value held.
    (
        re.compile(r"invalid choice: .* \(choose from ", re.S),
        f"invalid choice ({_NOT_REPEATED}; choose from ",
    ),
    (re.compile(r"ignored explicit argument .*", re.S), f"takes no value ({_NOT_REPEATED})"),
    (re.compile(r"(ambiguous option: -[^=\s]*)=.* (could match )", re.S), r"\1=<value> \2"),
    # Named by _unrecognized before they get here; should argparse raise it on its own.
    (re.compile(r"(unrecognized arguments:) .*", re.S), rf"\1 some ({_NOT_REPEATED})"),
)


def _unrecognized(extras: Sequence[str], argv: Sequence[str]) -> str:
    """argparse's "unrecognized arguments" error, naming each word by the option it is, or
    its place on the command line, never by what it holds (nor an option's value).

    argparse quotes them as given: a master key pasted as a stray argument (`keys rotate
    --to file:x KEY`), an address typed twice, a name. The place is the word's, counted
    after ``klantsync`` as the shell splits the line.
    """
    taken: set[int] = set()
    named: list[str] = []
    for word in extras:
        place = next((i for i, w in enumerate(argv) if w == word and i not in taken), None)
        if place is not None:
            taken.add(place)
        option = word.partition("=")[0]
        if _OPTION_NAME.fullmatch(option):
            named.append(f"{option}=<value>" if "=" in word else option)
        else:
            named.append("a word" if place is None else f"word {place + 1}")
    listed = f"unrecognized arguments: {', '.join(named)}"
    if any(name.startswith("word") for name in named):
        return f"{listed} (words counted after klantsync; {_NOT_REPEATED})"
    return f"{listed} ({_NOT_REPEATED})" if any("=" in name for name in named) else listed


class _Parser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' too: they take the parser's class), whose usage
    errors keep their message, so :func:`main` can answer them on stdout under ``--json``.

    Its text on stderr stays argparse's own (usage line, ``klantsync ...: error: ...``), with
    the values it quotes left out and the person's contact details masked.
    """

    def error(self, message: str) -> NoReturn:
        # argparse quotes values as given: a master key typed where a choice belongs, a
        # value given to a flag. The option or place it names is said, not the value.
        for quoting, instead in _QUOTING:
            message = quoting.sub(instead, message)
        self.refuse(message)

    def refuse(self, message: str) -> NoReturn:
        """A usage error (exit 2) saying ``message`` as it is, an e-mail address or phone
        number in it masked: for a message built here, which repeats no value given
        (:func:`_unrecognized`).

        Contact details only: :func:`redact` would read "--public-key: expected one
        argument" as a key and mask the message's own words.
        """
        message = mask_contact_details(message)
        try:
            super().error(message)
        except SystemExit as exc:
            raise _UsageExit(exc.code, f"{self.prog}: {message}") from None


def _json_asked(argv: Sequence[str]) -> bool:
    """Whether ``--json`` (or an abbreviation argparse would take for it) was given, read
    from the words themselves: a usage error leaves no parsed arguments to ask."""
    for word in argv:
        if word == "--":
            return False  # what follows is positional text, not options
        if word == "--json" or (len(word) > 2 and "--json".startswith(word)):
            return True
    return False


#: The options that read their value from standard input when given as ``-``.
_FROM_STDIN = ("email", "phone")


def _values_from_stdin(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--email -`` and ``--phone -``: the value read from standard input instead.

    Given as an argument, a person's address stays in /proc/PID/cmdline for the whole
    command (every local user's ``ps`` shows it, and an erasure's fan-out takes minutes
    against a slow vendor), and in the shell's history and sudo's log.
    """
    dashed = [name for name in _FROM_STDIN if getattr(args, name, None) == "-"]
    assignments: list[str] = getattr(args, "assignments", None) or []
    if "-" in assignments:
        dashed.append("set")
    if len(dashed) > 1:
        given = " and ".join(f"--{name} -" for name in dashed)
        parser.error(f"{given}: standard input gives only one of them")
    for name in dashed:
        if name == "set":
            # The corrected values (a name, a street) are as much the person's as the
            # address: one FIELD=VALUE a line, beside those given as arguments.
            given_here = [each for each in assignments if each != "-"]
            args.assignments = given_here + _stdin_lines(parser, "--set", one=False)
        else:
            setattr(args, name, _stdin_lines(parser, f"--{name}", one=True)[0])


def _stdin_lines(parser: argparse.ArgumentParser, option: str, *, one: bool) -> list[str]:
    """The lines of standard input, stripped, blank ones left out; a usage error if it
    gives none, or (``one``) more than one.

    At a terminal, for ``one``, the first line is taken (a person typing it, told on stderr
    what is awaited); otherwise up to the end of input (Ctrl-D). From a pipe or a file the
    whole input is read: a second address there would otherwise be passed over in silence,
    as if its request had been made.
    """
    stdin = sys.stdin
    if stdin is None:  # started with standard input closed
        parser.error(f"{option} -: there is no standard input to read it from")
    try:
        if stdin.isatty():
            ask = f"{option}: " if one else f"{option} (one FIELD=VALUE a line, then Ctrl-D): "
            print(ask, end="" if one else "\n", file=sys.stderr, flush=True)
            lines = [stdin.readline()] if one else stdin.read().splitlines()
        else:
            lines = stdin.read().splitlines()
    except (OSError, ValueError) as exc:  # ValueError: not text in its encoding, or closed
        parser.error(f"{option} -: cannot read standard input ({type(exc).__name__})")
    values = [line.strip() for line in lines if line.strip()]
    if not values or (one and len(values) != 1):
        # Neither is echoed: the lines are personal data.
        found = "nothing" if not values else f"{len(values)} lines"
        wanted = "give one, on one line" if one else "give one FIELD=VALUE a line"
        parser.error(f"{option} -: standard input gave {found}; {wanted}")
    return values


#: The environment variable read for the config's path when no ``-c`` is given.
CONFIG_VARIABLE = "KLANTSYNC_CONFIG"


def _parser() -> _Parser:
    parser = _Parser(
        prog="klantsync",
        description="GDPR-aware customer-data sync: webshop -> CRM, with proof.",
    )
    parser.add_argument(
        "-c", "--config", type=Path, help=f"config file (TOML); default: ${CONFIG_VARIABLE}"
    )
    parser.add_argument("--version", action="version", version=f"klantsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, json_help: str = "machine-readable output"
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help=json_help)
        return p

    demo = command("demo", "sandboxes + sync + erasure + access + register, end to end")
    demo.add_argument("--dir", type=Path, help="keep the demo's files here (default: temp dir)")
    demo.add_argument(
        "--customers",
        # The story changes, erases and looks up customers 1 to 5.
        type=int_at_least(5, "the demo's story uses five customers"),
        default=300,
        help="synthetic customers to seed (at least 5; default 300)",
    )
    command(
        "keygen",
        "print a new master key (urlsafe base64 of 32 random bytes)",
        json_help='print {"key": ...} instead of the bare key',
    )
    check = command(
        "check",
        "validate config, mappings and TLS settings; list compliance gaps "
        "(exit 1 if there are any, or if --online finds a system unreachable)",
    )
    check.add_argument("--online", action="store_true", help="also call every system once")
    sync = command("sync", "run flows now")
    sync.add_argument("--flow", help="only this flow")
    sync.add_argument(
        "--full",
        action="store_true",
        help="ignore cursors; re-read everything, and offer again records a system refused before",
    )
    sync.add_argument("--dry-run", action="store_true", help="report what would be sent")
    resync = command(
        "resync",
        "manual resync of one source system's flows; handed to the daemon as a job when one "
        "runs on this store, run here otherwise",
    )
    resync.add_argument("--system", required=True, help="source system name")
    resync.add_argument(
        "--email", help="only this person; - reads the address from standard input (not in ps)"
    )
    resync.add_argument(
        "--full", action="store_true", help="ignore cursors; retry records refused before"
    )
    command("status", "flows, queues, dead letters")
    command(
        "run",
        "the daemon: scheduler + webhooks + admin API + metrics",
        json_help="log JSON lines on stderr, whatever [logging] format says",
    )
    sandbox = command(
        "sandbox",
        "run the sandboxes alone over HTTPS, to try things by hand",
        json_help="print one JSON object (URLs, CA, credentials) instead of export lines",
    )
    sandbox.add_argument(
        "--dir",
        type=Path,
        help="CA and certs (default: var/sandbox beside the -c config, else in this folder; "
        "config.example.toml trusts var/sandbox/tls/ca.pem relative to itself)",
    )
    sandbox.add_argument(
        "--customers",
        type=int_at_least(0),  # empty sandboxes are a fair start for trying things by hand
        default=50,
        help="synthetic customers to seed (0 or more; default 50)",
    )
    audit_cmd = command("audit", "verify or export the audit chain")
    audit_cmd.add_argument("action", choices=["verify", "export"])
    audit_cmd.add_argument(
        "--since",
        help="export from the first entry at or after this ISO date or time, and every entry "
        "after it (local time unless it has an offset, e.g. 2026-06-01T10:00+02:00)",
    )
    cli_dsr.register(sub)
    cli_accountability.register_commands(sub)
    cli_keys.register(sub)
    cli_backup.register(sub)
    cli_health.register(sub)
    _config_after_the_command(parser)
    return parser


def _config_after_the_command(parser: argparse.ArgumentParser) -> None:
    """Let every command and action take ``-c/--config`` after its own name as well.

    ``klantsync check --config FILE`` is how most tools are called, and argparse refused it
    as an unrecognized argument when the option was the top-level parser's alone. The
    command's copy has no default (``SUPPRESS``), so one given before the command is kept
    unless another is given after it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "-c",
                    "--config",
                    type=Path,
                    default=argparse.SUPPRESS,
                    help="config file (TOML), as before the command",
                )
                _config_after_the_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``klantsync`` console script."""
    # First: a crash from here on must not leave the keys and people in memory on disk.
    forbid_core_dumps()
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(words)
    except _UsageExit as exc:
        # A bad option value (`--months 0`, an id that is no number) is answered on stdout
        # under --json as the usage errors the commands find are: a script reading the
        # answer found an empty document.
        answer = {"error": "usage", "message": exc.message}
        if exc.code == EXIT_USAGE and _json_asked(words) and not _json_line(answer):
            raise SystemExit(EXIT_PIPE) from None  # the answer's reader went away
        raise


def _stdout_in_utf8() -> None:
    """Make standard output UTF-8, whatever encoding the locale gives it.

    What klantsync prints holds text from the configuration, paths and documents: the
    register and the breach draft are UTF-8 where ``--out`` writes them, and the register's
    HTML page declares it. In the locale's encoding a Latin-1 host wrote ``register --format
    html > register.html`` in Latin-1 under that declaration (its "Categorieën" unreadable),
    and an ASCII one ended ``incident open`` as an internal error after the breach was
    recorded, ``incident list`` with exit 1 (as if a breach were overdue) over a summary with
    an "é" in it, and any other command as soon as it printed such a name or path.
    """
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name != "utf-8":
        stream.reconfigure(encoding="utf-8", errors=stream.errors)


def _main(argv: list[str]) -> int:
    _stdout_in_utf8()
    parser = _parser()
    # parse_args as argparse has it, but for the words it could not place, which it quotes.
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.refuse(_unrecognized(extras, argv))
    if args.config is None and os.environ.get(CONFIG_VARIABLE):
        # One instance per client, its config in one place: a shell or a container set up
        # for that client names it once instead of on every command. -c still wins.
        args.config = Path(os.environ[CONFIG_VARIABLE])
    console = _Stdout(
        stderr=False, highlight=False, soft_wrap=True, force_interactive=_interactive(sys.stdout)
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        # In here: Ctrl-C at the prompt for an address is an interrupt (130), no traceback.
        _values_from_stdin(args, parser)
        code = _dispatch(args, parser, console)
        # Flushed here so a reader that went away is noticed while it can be handled.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_PIPE
    except ConfigError as exc:
        option = _option_of(exc)
        if option is not None:
            # A value given on the command line, refused by the command (an --out that is a
            # folder, a --since that is no date): bad usage, not a config file to fix.
            return _error(err, args, f"{option}: {exc.problem}", EXIT_USAGE, kind="usage")
        # file and key apart too: a script should not have to split the message on ": ",
        # which a path may hold.
        # Every problem the load found, each on its line (and under --json each as file, key
        # and message apart, the first too, one or more), so all are fixed before the next
        # check; file and key are the first's.
        every = (exc, *exc.also)
        where: dict[str, Any] = {
            "file": exc.file,
            "key": exc.key,
            "problems": [
                {"file": each.file, "key": each.key, "message": str(each)} for each in every
            ],
        }
        message = (
            str(exc)
            if not exc.also
            else "\n".join([f"{len(every)} problems in the configuration:", *map(str, every)])
        )
        return _error(err, args, message, EXIT_USAGE, kind="config", where=where)
    except DsrUsageError as exc:
        # Bad usage a command finds in what it was given (resync's --email), answered as
        # `dsr` answers its own.
        return _error(err, args, str(exc), EXIT_USAGE, kind="usage")
    except StoreFullError as exc:
        said = exc.then(_after_full_disk(args))
        return _error(err, args, str(said), EXIT_FAILED, kind="store")
    except StoreError as exc:
        return _error(err, args, str(exc), EXIT_FAILED, kind="store")
    except KlantsyncError as exc:
        return _error(err, args, str(exc), EXIT_FAILED, kind="error")
    except KeyboardInterrupt:
        return _interrupted(err, args)
    except Exception as exc:  # the last line of defence: a bug must not dump a traceback
        return _internal_error(err, args, exc)


#: What a sync stopped by a full disk left: each page's payloads were queued with the cursor
#: past them (one transaction), so nothing is read twice or lost.
_SYNC_AFTER = "free space and run again (the next sync resumes after the last page it queued)"
#: What a command that only reads the store left when its disk is full: nothing changed.
_ONLY_READS = "it only reads the store, and changed nothing: free space and run it again"
#: What each command stopped by a full store disk left, by command (or ``dsr`` action): said
#: after "the write was rolled back and nothing queued is lost:". Work that knows more (an
#: erasure already recorded, a resync handed to the daemon) says so nearer the failure.
_AFTER_FULL_DISK = {
    "sync": _SYNC_AFTER,
    "resync": _SYNC_AFTER,
    "status": _ONLY_READS,
    "audit": (
        "nothing was changed (an export is recorded in the trail only once written): free "
        "space and run it again"
    ),
    "backup": "no backup was written: free space on the store's disk and run backup again",
    "restore": (
        "a restore that stops before the backup is put in place leaves the store as it was "
        "(the store it replaced is kept beside it once it is): free space and run restore again"
    ),
    "keys": (
        "a rotation stopped here left the store under the master key it had (one stopped "
        "after its commit is finished by running keys rotate again): free space and run again"
    ),
    "retention": (
        "what it deleted before is deleted, the rest stays for the next run: free space and "
        "run it again"
    ),
    "dsr erase": (
        "this erasure was not recorded and no system was asked to erase anything: free space "
        "and run dsr erase again"
    ),
    # Recorded first, carried out in the same run: which of the two it stopped in, the
    # list of open requests tells.
    "dsr access": (
        "free space, then, if dsr list --open shows the request, dsr retry ID finishes it; if "
        "not, nothing was recorded and no system was asked: run dsr access again"
    ),
    "dsr rectify": (
        "free space, then, if dsr list --open shows the correction, dsr retry ID finishes it; "
        "if not, nothing was recorded and no system was sent anything: run dsr rectify again"
    ),
    "dsr retry": (
        "the request stays open, each system's part as last recorded (a system that acted "
        "since is asked again, which is safe): free space and run dsr retry again"
    ),
    "dsr list": _ONLY_READS,
    "dsr show": _ONLY_READS,
    "dsr receipt": _ONLY_READS,
    "dsr verify-receipt": _ONLY_READS,
}


def _after_full_disk(args: argparse.Namespace) -> str:
    """What the command stopped by a full store disk left, and how to go on."""
    if args.command == "sync" and getattr(args, "dry_run", False):
        return "a dry run writes nothing to the store: free space and run it again"
    reads = (
        (args.command == "keys" and getattr(args, "keys_action", None) == "show")
        or (args.command == "incident" and args.incident_action in ("list", "show"))
        or (args.command == "retention" and getattr(args, "dry_run", False))
    )
    if reads:
        return _ONLY_READS
    if args.command == "incident":
        if args.incident_action == "close":
            return "the incident stays open: free space and run incident close again"
        return "the incident was not recorded: free space and run incident open again"
    action = getattr(args, "dsr_action", None)
    named = f"dsr {action}" if args.command == "dsr" else args.command
    return _AFTER_FULL_DISK.get(named, "free space and run it again")


#: What a ConfigError about a command-line option gives as its file, the option as its key.
_COMMAND_LINE = "command line"


def _option_of(exc: ConfigError) -> str | None:
    """The option a ConfigError is about, or None for one about the config or a mapping.

    The commands refuse a bad option value as a ConfigError naming the option where the
    file goes (``--out``), or ``command line`` with the option as the key (``--to``): exit 2
    either way, but under ``--json`` it is answered as usage, with no ``file`` for a script
    to look for.
    """
    if exc.file == _COMMAND_LINE:
        return exc.key
    if exc.file.startswith("--") and not exc.key:
        return exc.file
    return None


#: What an interrupted sync leaves: each page's payloads were queued with the cursor past
#: them (one transaction), so the operator who stopped it need not wonder what to redo.
_SYNC_INTERRUPTED = (
    "interrupted: what this sync queued stays queued, and the next sync continues where it stopped"
)


def _interrupted(err: Console, args: argparse.Namespace) -> int:
    """Ctrl-C (SIGINT): exit 130, said on stderr. A ``--json`` reader is answered on stdout,
    as for every other way a command ends: it read an empty document. (Not so for the
    commands Ctrl-C is the way to stop, ``sandbox`` and ``run``: their output is printed.)"""
    is_sync = args.command in ("sync", "resync")
    message = (
        _SYNC_INTERRUPTED if is_sync and not getattr(args, "dry_run", False) else "interrupted"
    )
    err.print(message, markup=False)
    answers = getattr(args, "json", False) and args.command not in ("sandbox", "run")
    if answers and not _json_line({"error": "interrupted", "message": message}):
        return EXIT_PIPE
    return 130  # 128 + SIGINT, as the shell reports any tool stopped so


def _internal_error(err: Console, args: argparse.Namespace, exc: Exception) -> int:
    """One line for an unexpected exception; the traceback only when asked for.

    A traceback's frames show local values (a record, a token), and its text goes wherever
    stderr goes (a journal, a CI log): so by default only the exception's type and its text,
    redacted as log lines are, and a hint how to get the rest. The traceback asked for is
    its text (file, line, source; no frame's values), redacted as the log handler redacts
    its own: the exception's text, and that of those chained to it, can hold an address.
    """
    debug = debug_wanted()
    if debug:
        import traceback

        trace = "".join(traceback.format_exception(exc))
        print(redact(trace), end="", file=sys.stderr, flush=True)
    text = " ".join(redact(str(exc)).split())  # one line, whatever the exception holds
    detail = f": {text}" if text else ""
    err.print(f"klantsync: internal error: {type(exc).__name__}{detail}", markup=False)
    if not debug:
        err.print("(run again with KLANTSYNC_DEBUG=1 to see the traceback)", markup=False)
    if getattr(args, "json", False):
        # Scripts read the answer on stdout, as for every other error.
        answer = {"error": "internal", "message": f"{type(exc).__name__}{detail}"}
        if not _json_line(answer):
            return EXIT_PIPE
    return EXIT_FAILED


class _Stdout(Console):
    """The console commands print their output with; a reader gone away is exit 141.

    rich catches the broken pipe itself and exits 1, which a script reads as a command that
    finished with failures. Raised on instead, :func:`main` ends it as for ``print``.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _interactive(stream: object) -> bool | None:
    """Whether what is written to ``stream`` is seen on a terminal as it is drawn: ``False``
    for a pipe or a file, ``None`` (rich decides, a dumb terminal not interactive) for one.

    rich takes a pipe for a terminal when the environment says ``FORCE_COLOR=1`` (many CI
    runners set it) or ``TTY_COMPATIBLE=1``, and would draw the sync's progress bar into the
    report a script or a log keeps. Those ask for colour and control codes, which the report
    keeps; a bar redrawn in place is for a person watching. ``TTY_INTERACTIVE`` still says
    otherwise, as rich reads it.
    """
    if "TTY_INTERACTIVE" in os.environ:
        return None
    isatty = getattr(stream, "isatty", None)
    try:
        return None if isatty is not None and isatty() else False
    except (OSError, ValueError):  # closed, or detached
        return False


def _stdout_gone() -> None:
    """Standard output's reader closed it (``| head``): stop quietly, as Unix tools do.

    Python ignores SIGPIPE, so the write raised instead; what is still buffered would raise
    again when the interpreter flushes at exit and print a traceback. Pointing the descriptor
    at /dev/null lets that flush succeed (the pattern the ``signal`` module's docs give).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass


def _error(
    err: Console,
    args: argparse.Namespace,
    message: str,
    code: int,
    kind: str,
    where: dict[str, Any] | None = None,
) -> int:
    """Report an error; ``code``, or 141 when the reader of the JSON answer went away."""
    if getattr(args, "json", False):
        if not _json_line({"error": kind, "message": message, **(where or {})}):
            return EXIT_PIPE
    else:
        # Messages name config keys such as [systems.crm]: escaped, or rich eats them as markup.
        err.print(f"[bold red]error[/]: {escape(message)}", markup=True, soft_wrap=True)
    return code


def _json_line(answer: dict[str, Any]) -> bool:
    """Print one JSON line on stdout; False when its reader went away (``| head``).

    An error's answer is printed while ``main`` handles the error, where a broken pipe
    would escape as a traceback (with the error's text) and exit 1.
    """
    try:
        print(json.dumps(answer), flush=True)
    except BrokenPipeError:
        _stdout_gone()
        return False
    return True


def _need_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.config is None:
        parser.error(f"{args.command} needs -c CONFIG (or {CONFIG_VARIABLE} set to its path)")
    path: Path = args.config
    return path


#: The commands that call the systems, or serve their webhooks and the admin API: the only
#: ones that need the systems' credentials and webhook secrets and the daemon's tokens, and
#: so resolve them at load (one missing is bad configuration before they start); of ``dsr``,
#: the actions that call the systems (cli_dsr.CALLS_SYSTEMS). The others (``status``,
#: ``backup``, ``keys rotate``, ``dsr list``, ``dsr receipt``...) run as the operator, who
#: is not given them: deploy/klantsync.service hands them to the daemon alone.
_USES_SECRETS = frozenset({"check", "sync", "resync", "run"})


def _uses_secrets(args: argparse.Namespace) -> bool:
    if args.command == "dsr":
        return args.dsr_action in cli_dsr.CALLS_SYSTEMS
    return args.command in _USES_SECRETS


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser, console: Console) -> int:
    if args.command == "keygen":
        # Printing the key is the command's purpose, so its JSON form holds it too.
        key = generate_master_key()
        print(json.dumps({"key": key}) if args.json else key)
        return EXIT_OK
    if args.command == "demo":
        from connector.demo import run_demo

        if args.dir is not None:
            make_folder(args.dir, option="--dir")
            if (args.dir / "klantsync.db").exists():
                # Its store and key against freshly seeded sandboxes: the first sync would
                # find "unchanged" customers and the erasure nobody to erase, and say so as
                # if that were the demo.
                raise ConfigError(
                    _COMMAND_LINE,
                    "--dir",
                    f"{args.dir} holds an earlier demo's store; give a new or empty folder",
                )
        return run_demo(console, directory=args.dir, customers=args.customers, as_json=args.json)
    if args.command == "sandbox":
        from connector.demo import run_sandboxes

        # Relative paths in a config are relative to it (the file itself, a symlink followed:
        # load_config reads them so), so the CA goes where -c's file looks for it, from
        # whatever folder the command runs in.
        base = args.config.resolve().parent if args.config is not None else Path()
        directory = args.dir or base / "var" / "sandbox"
        make_folder(directory, option="--dir")
        return run_sandboxes(console, directory, args.customers, as_json=args.json)
    config_path = _need_config(args, parser)
    config = load_config(config_path, secrets=_uses_secrets(args))
    with _store_errors(config):
        return _dispatch_configured(args, parser, console, config_path, config)


@contextlib.contextmanager
def _store_errors(config: Config) -> Iterator[None]:
    """Store failures as the errors the exit status contract wants, without a traceback.

    A store path that cannot hold a store is the config's to fix (exit 2, naming
    ``store.path``). A store file found damaged while a command runs (SQLite notices a bad
    page when it reads it, which can be long after opening), a full or failing disk, a store
    it may not write or one locked too long is a StoreError (exit 1) saying what to do.
    """
    try:
        yield
    except StorePathError as exc:
        raise ConfigError(str(config.path), "store.path", str(exc)) from exc
    except sqlite3.Error as exc:
        found = failure(config.store_path, exc)
        if found is None:
            raise
        raise found from exc


def _dispatch_configured(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    console: Console,
    config_path: Path,
    config: Config,
) -> int:
    # The daemon reports through its log: `run --json` asks for it as JSON lines.
    log_format = "json" if args.command == "run" and args.json else config.logging.format
    setup_logging(config.logging.level, log_format)
    handled = cli_accountability.run(args, console, config)
    if handled is not None:
        return handled
    if args.command == "keys":
        return cli_keys.run(args, console, config)
    backed_up = cli_backup.run(args, console, config)
    if backed_up is not None:
        return backed_up
    healthy = cli_health.run(args, console, config)
    if healthy is not None:
        return healthy
    if args.command == "check":
        return run_loop(cli_check.check(config_path, args, console))
    if args.command == "run":
        return _run_daemon(config_path)
    if args.command == "resync":
        # Checked before the hand-off too: a job the daemon cannot run would be queued,
        # reported as queued, and end "done" having done nothing.
        cli_sync.resync_flows(config, args.system)
        if args.email is not None:
            # Refused as bad usage, as `dsr` refuses it (a DsrUsageError, answered as usage,
            # not as a config error naming a file "--email"): otherwise "pulled 0" and exit
            # 0, as if the person had been synced.
            from connector.dsr_input import checked_email

            args.email = checked_email(args.email)
        if daemon_running(config.store_path):
            handed = "the resync was not handed to the daemon: free space and run it again"
            with on_full_disk(config.store_path, handed):
                return cli_sync.queue_resync(config, args, console)
    # Checked before the store is opened, as resync's system is: a typo is bad usage and
    # leaves nothing behind (no store made, no key bound to it, no config recorded as having
    # taken effect for a command that did nothing). About --flow, not the config: answered
    # as usage under --json.
    if (
        args.command == "sync"
        and args.flow is not None
        and all(flow.name != args.flow for flow in config.flows)
    ):
        known = ", ".join(flow.name for flow in config.flows) or "none"
        raise ConfigError("--flow", "", f"no flow named {args.flow!r} (flows: {known})")
    if args.command == "sync" and not config.flows:
        return cli_sync.no_flows(config, args)
    if args.command in ("sync", "resync"):
        return run_loop(cli_sync.sync(config, args, console))
    if args.command == "status":
        return cli_status.status(config, args, console)
    if args.command == "audit":
        return cli_status.audit_chain(config, args, console)
    if args.command == "dsr":
        return cli_dsr.run(args, console, config)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover


def _run_daemon(config_path: Path) -> int:
    from connector.daemon import Daemon, hangups_ignored
    from connector.lock import DaemonLock

    with hangups_ignored():
        config = load_config(config_path)
        # The sync lock for the daemon's whole life: it syncs whenever its schedule or a
        # webhook says, so a `sync` beside it is refused (and told to hand the work over
        # with `resync`).
        with DaemonLock(config.store_path), syncing(config.store_path, "daemon"):

            async def serve() -> None:
                async with open_runtime(config) as rt:
                    settle_heap()
                    await Daemon(rt).serve()

            run_loop(serve())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
