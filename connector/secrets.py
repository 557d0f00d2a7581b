"""Secret references: ``env:NAME``, ``file:PATH`` or ``credential:NAME``, never the secret
itself in the config.

``credential:NAME`` is a systemd credential (``LoadCredential=NAME:PATH`` in the unit): the
file ``NAME`` in the folder ``$CREDENTIALS_DIRECTORY`` names, which systemd chooses as the
unit starts, so no ``file:`` path could name it.

Resolved once at config load; the value is wrapped in ``SecretStr`` straight away so it never
shows up in a repr, a log line or an error message. A command that calls no system loads the
config without resolving the systems' secrets: each is then a :class:`DeferredSecret`,
resolved if and when it is first used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import SecretStr

from connector.errors import ConfigError
from connector.smallfile import UnfitFileError, read_small

__all__ = ["DeferredSecret", "credential_file", "resolve_secret"]

#: What an environment variable's name is made of, as a shell allows it.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A name shown in messages: upper case and short, as variables are named by convention.
_NAMED = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
#: What a systemd credential's name is made of: a file name in the credentials folder
#: (no "/", not "." or ".."; a ":" would end the name in the unit's LoadCredential=).
_CREDENTIAL = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,254}")
#: The words of a credential's name as it is shown in messages: short, few digits each
#: (``master.key``, ``secrets_shop.consumer_key``). A token pasted where the name belongs is
#: a name too (``shpat_`` and 32 hex digits), and never shown.
_CREDENTIAL_WORD = re.compile(r"[A-Za-z]*[0-9]?[A-Za-z]*[0-9]?[A-Za-z]*")
#: A secret reference's kinds, as messages list them.
_KINDS = '"env:NAME", "file:PATH" or "credential:NAME"'


def resolve_secret(
    reference: object,
    *,
    file: str,
    key: str,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    sent: bool = True,
) -> str:
    """The value a reference points at.

    Args:
        reference: the configured value, e.g. ``"env:HUBSPOT_TOKEN"``.
        file: config file name, for messages.
        key: dotted config key, for messages.
        base_dir: what a relative ``file:`` path is relative to (the config's folder).
        env: the environment (``os.environ`` by default); ``credential:`` reads
            ``CREDENTIALS_DIRECTORY`` from it.
        sent: whether the secret travels in requests (a token, a password, the admin
            token): then it must be one line of printable ASCII. A webhook secret only keys
            a signature, over its UTF-8 bytes, and may be any text the vendor allowed.

    Raises:
        ConfigError: the reference is malformed, or points at nothing; the message names the
            variable or path but never a value.
    """
    environ = os.environ if env is None else env
    if not isinstance(reference, str):
        raise ConfigError(file, key, f"must be a secret reference: {_KINDS}")
    if reference.startswith("env:"):
        name = reference[4:].strip()
        if not name:
            raise ConfigError(file, key, "env: reference names no variable")
        if not _VARIABLE.fullmatch(name):
            # Not echoed: what stands there is as likely the secret itself, pasted in.
            raise ConfigError(
                file,
                key,
                "env: reference is not a variable name (letters, digits and _); was the "
                "secret itself written there? Secrets are never written in the config",
            )
        value = environ.get(name)
        # Named in messages only when it reads as a variable's name does (upper case, short):
        # a token pasted where the name belongs (cs_3f9a..., shpat_...) is one too.
        named = name if _NAMED.fullmatch(name) else "it names (not shown: a secret pasted in?)"
        if value is None:
            raise ConfigError(file, key, f"environment variable {named} is not set")
        if not value.strip():
            # Blanks (an env file's "NAME= ") are no secret: taken as one, an empty admin
            # token or webhook key would let in whoever sends none.
            raise ConfigError(file, key, f"environment variable {named} is empty")
        value = value.strip()
        return _sendable(value, file, key, f"environment variable {named}") if sent else value
    if reference.startswith("file:"):
        raw = reference[5:].strip()
        if "\x00" in raw:
            # TOML allows "\u0000"; no file name holds one, and opening it raised
            # ValueError ("embedded null byte"), an internal error naming no key.
            raise ConfigError(file, key, "file: reference holds a NUL character (\\u0000)")
        path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
        # Not echoed in messages where it may be a secret pasted in: a bare name as long as
        # a token (shpat_..., 40 hex, a JWT), or a "path" whose folder does not exist (a
        # base64 secret's "/").
        pasted = ("/" not in raw and len(raw) > 24) or not path.parent.is_dir()
        shown = "it names (not shown: a secret pasted in?)" if pasted else str(path)
        if raw.startswith("~"):
            # No shell reads the config, so "~" is a folder of that name beside it, which
            # is missing: the path was hidden as a secret pasted in. No token begins so.
            missing = (
                f"secret file {raw} not found: a ~ is not expanded to a home folder; give "
                "the path from /, or relative to the config file's folder"
            )
        else:
            missing = f"secret file {shown} not found"
        value = _read_file(path, f"secret file {shown}", missing, file=file, key=key)
        return _sendable(value, file, key, f"secret file {shown}") if sent else value
    if reference.startswith("credential:"):
        name = reference[11:].strip()
        value = _credential(name, environ, file=file, key=key)
        return _sendable(value, file, key, _credential_shown(name)) if sent else value
    miswritten = _miswritten_kind(reference)
    if miswritten is not None:
        raise ConfigError(file, key, miswritten)
    raise ConfigError(
        file,
        key,
        f"must be a secret reference ({_KINDS}); secrets are never written in the config "
        "file itself",
    )


#: Each kind of reference, as it begins and as messages show it.
_EXAMPLES = {"env:": '"env:NAME"', "file:": '"file:PATH"', "credential:": '"credential:NAME"'}


def _miswritten_kind(reference: str) -> str | None:
    """What is wrong with ``reference`` where it is a reference of a known kind written with
    a blank in front or in capitals (``" env:NAME"``, ``"ENV:NAME"``); else ``None``.

    Refused as no reference at all, it was said to be a secret written in the config, while
    it read as the reference it was meant to be: the blank unseen, the capitals unsuspected.
    Said without the reference itself, which may be a secret pasted in after all.
    """
    written = reference.lstrip()
    for kind, example in _EXAMPLES.items():
        if not written.lower().startswith(kind):
            continue
        wrong = ["begins with a blank"] if written != reference else []
        if not written.startswith(kind):
            wrong.append(f'writes "{kind}" in capitals')
        return (
            f"{' and '.join(wrong)}; write the reference as {example} is written, from its "
            "first character and in lower case"
        )
    return None


def _credential(name: str, environ: Mapping[str, str], *, file: str, key: str) -> str:
    """The value of the systemd credential ``name``, from ``$CREDENTIALS_DIRECTORY``."""
    if not name:
        raise ConfigError(file, key, "credential: reference names no credential")
    if not _CREDENTIAL.fullmatch(name):
        # Not echoed: what stands there is as likely the secret itself, pasted in.
        raise ConfigError(
            file,
            key,
            "credential: reference is not a credential's name (letters, digits, ., _, - and "
            "@, no /); was the secret itself written there? Secrets are never written in the "
            "config",
        )
    shown = _credential_shown(name)
    folder = _credentials_folder(environ)
    if not folder:
        # Run by hand, outside the unit that loads it (sudo -u, a shell, cron): systemd
        # sets the variable for the unit's own processes only.
        raise ConfigError(
            file,
            key,
            f"{shown} is a systemd credential and CREDENTIALS_DIRECTORY is not set: run the "
            "command in a unit that loads it (LoadCredential=), as the README's kss does, "
            "or set CREDENTIALS_DIRECTORY to a folder holding it",
        )
    if not Path(folder).is_absolute():
        # A relative folder would be read from wherever the command was started.
        raise ConfigError(
            file, key, f"CREDENTIALS_DIRECTORY is not an absolute path; {shown} is read there"
        )
    missing = (
        f"{shown} not found in CREDENTIALS_DIRECTORY ({folder}): the unit loads no "
        "credential of that name (LoadCredential=)"
    )
    return _read_file(Path(folder) / name, shown, missing, file=file, key=key)


def _credentials_folder(environ: Mapping[str, str]) -> str:
    """The folder of the systemd credentials given to this process; "" when none is."""
    # Set by systemd for the processes of a unit given credentials, to their folder.
    return environ.get("CREDENTIALS_DIRECTORY", "").strip()


def credential_file(reference: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The file a ``credential:NAME`` reference is read from here and now (``NAME`` in
    ``$CREDENTIALS_DIRECTORY``, read from ``env``, ``os.environ`` by default); ``None`` for
    another reference, or one no file stands for (no folder given, a name that is none).

    For what must not be written over (``backup --out``) and who may read it (``check``),
    as for a ``file:`` secret: under the README's ``ks`` the folder is the state directory,
    and the credential ``master.key`` the master key file itself.
    """
    if not reference.startswith("credential:"):
        return None
    name = reference[11:].strip()
    folder = _credentials_folder(os.environ if env is None else env)
    if not folder or not Path(folder).is_absolute() or not _CREDENTIAL.fullmatch(name):
        return None
    return Path(folder) / name


def _credential_shown(name: str) -> str:
    """How a credential's name is shown in messages: itself, where it reads as a name."""
    words = re.split(r"[._@-]", name)
    if len(name) <= 64 and all(len(w) <= 16 and _CREDENTIAL_WORD.fullmatch(w) for w in words):
        return f"credential {name}"
    return "the credential it names (not shown: a secret pasted in?)"


def _read_file(path: Path, what: str, missing: str, *, file: str, key: str) -> str:
    """The text of the secret file at ``path``, blanks around it dropped; ``what`` names it
    in messages, ``missing`` is said when there is none. Raises ConfigError."""
    try:
        # utf-8-sig: an editor's byte-order mark in front (Windows Notepad writes one)
        # is not part of the secret.
        value = read_small(path, "secret", MAX_SECRET_FILE_BYTES).decode("utf-8-sig").strip()
    except UnfitFileError as unfit:
        raise ConfigError(file, key, f"{what} {unfit}") from None
    except FileNotFoundError:
        raise ConfigError(file, key, missing) from None
    except UnicodeDecodeError:
        # Said without the decoder's text, which quotes a byte of the secret.
        raise ConfigError(file, key, f"{what} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(file, key, f"{what} unreadable ({exc.strerror})") from None
    if not value:
        raise ConfigError(file, key, f"{what} is empty")
    return value


#: The most bytes a secret file is read for: a token, a password or the master key takes
#: well under a kilobyte; a file longer by far is not a secret's.
MAX_SECRET_FILE_BYTES = 65_536


class DeferredSecret(SecretStr):
    """A secret whose reference is resolved when its value is first asked for, not at load.

    For the commands that call no system (``status``, ``backup``, ``keys rotate``...): the
    operator runs them as the service user, without the secrets the daemon alone is given
    (deploy/klantsync.service's credentials, or its secrets.env), and a vendor token resolved at
    load made each of them refuse to run. Asked for after all, it is resolved as at load, and
    raises the same :class:`ConfigError`. Shown as any secret is (``**********``), never the
    value.
    """

    def __init__(self, resolve: Callable[[], str]) -> None:
        super().__init__("(deferred)")  # only what repr and str show as "**********"
        self._resolve = resolve
        self._value: str | None = None

    def get_secret_value(self) -> str:
        if self._value is None:
            self._value = self._resolve()
        return self._value


def _sendable(value: str, file: str, key: str, where: str) -> str:
    """``value``, if it holds printable ASCII only; else a ConfigError that quotes none of it.

    Tokens and passwords travel in HTTP headers, which carry visible ASCII. A line break
    inside a secret file ("token", then a second line) would be written into the request as
    a header of its own; a typographic quote pasted with a token failed at the first call as
    an internal error that quoted the character and where in the secret it sits.
    """
    if value.isascii() and value.isprintable():
        return value
    raise ConfigError(
        file,
        key,
        f"{where} holds a character other than printable ASCII (a line break, a tab, a "
        "typographic quote or another non-ASCII character?); a secret is one line of "
        "plain ASCII",
    )
