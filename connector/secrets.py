"""Secret references: ``env:NAME`` or ``file:PATH``, never the secret itself in the config.

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

__all__ = ["DeferredSecret", "resolve_secret"]

#: What an environment variable's name is made of, as a shell allows it.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A name shown in messages: upper case and short, as variables are named by convention.
_NAMED = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


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
        env: the environment (``os.environ`` by default).
        sent: whether the secret travels in requests (a token, a password, the admin
            token): then it must be one line of printable ASCII. A webhook secret only keys
            a signature, over its UTF-8 bytes, and may be any text the vendor allowed.

    Raises:
        ConfigError: the reference is malformed, or points at nothing; the message names the
            variable or path but never a value.
    """
    environ = os.environ if env is None else env
    if not isinstance(reference, str):
        raise ConfigError(file, key, 'must be a secret reference: "env:NAME" or "file:PATH"')
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
        try:
            # utf-8-sig: an editor's byte-order mark in front (Windows Notepad writes one)
            # is not part of the secret.
            data = read_small(path, "secret", MAX_SECRET_FILE_BYTES)
            value = data.decode("utf-8-sig").strip()
        except UnfitFileError as unfit:
            raise ConfigError(file, key, f"secret file {shown} {unfit}") from None
        except FileNotFoundError:
            if raw.startswith("~"):
                # No shell reads the config, so "~" is a folder of that name beside it, which
                # is missing: the path was hidden as a secret pasted in. No token begins so.
                raise ConfigError(
                    file,
                    key,
                    f"secret file {raw} not found: a ~ is not expanded to a home folder; give "
                    "the path from /, or relative to the config file's folder",
                ) from None
            raise ConfigError(file, key, f"secret file {shown} not found") from None
        except UnicodeDecodeError:
            # Said without the decoder's text, which quotes a byte of the secret.
            raise ConfigError(file, key, f"secret file {shown} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(
                file, key, f"secret file {shown} unreadable ({exc.strerror})"
            ) from None
        if not value:
            raise ConfigError(file, key, f"secret file {shown} is empty")
        return _sendable(value, file, key, f"secret file {shown}") if sent else value
    raise ConfigError(
        file,
        key,
        'must be a secret reference ("env:NAME" or "file:PATH"); secrets are never written '
        "in the config file itself",
    )


#: The most bytes a secret file is read for: a token, a password or the master key takes
#: well under a kilobyte; a file longer by far is not a secret's.
MAX_SECRET_FILE_BYTES = 65_536


class DeferredSecret(SecretStr):
    """A secret whose reference is resolved when its value is first asked for, not at load.

    For the commands that call no system (``status``, ``backup``, ``keys rotate``...): the
    operator runs them as the service user, without the environment the daemon alone is
    given (deploy/klantsync.service's secrets.env), and a vendor token resolved at load made
    each of them refuse to run. Asked for after all, it is resolved as at load, and raises
    the same :class:`ConfigError`. Shown as any secret is (``**********``), never the value.
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
