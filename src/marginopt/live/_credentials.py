"""Exchange credentials: from environment variables or a file only its owner can read.

A credential never enters a message, a log line, a snapshot or a report: ``Credentials`` hides
its values from ``repr``, and ``Credentials.scrub`` removes them (and any session token) from any
text that came back from the network stack before it is shown.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import CredentialsError

#: environment variables read per venue (id, secret)
ENV_VARS: dict[str, tuple[str, str]] = {
    "deribit": ("DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"),
    # Derive: the owner wallet's address and the session key's private key
    "derive": ("DERIVE_WALLET", "DERIVE_SESSION_KEY"),
}
#: the environment variable naming the account within the key's owner, per venue
ACCOUNT_VARS: dict[str, str] = {"derive": "DERIVE_SUBACCOUNT_ID"}
#: a credentials file's other names for client_id / client_secret
_ALIASES = {"client_id": ("wallet",), "client_secret": ("session_key",)}
_MASK = "***"


@dataclass(frozen=True)
class Credentials:
    """An API key pair. ``repr`` and ``str`` never show the values."""

    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    source: str = "<memory>"
    #: the account the key acts for (Derive's subaccount id); not a secret
    account: str | None = None

    def __post_init__(self) -> None:
        for name in ("client_id", "client_secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CredentialsError(f"{name} is empty", source=self.source, field=name)

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r})"

    __str__ = __repr__

    def secrets(self, *extra: str | None) -> tuple[str, ...]:
        """Every string that must not be shown (the pair and any extra, e.g. a session token)."""
        return tuple(s for s in (self.client_id, self.client_secret, *extra) if s)

    def scrub(self, text: str, *extra: str | None) -> str:
        """``text`` with every credential (and ``extra`` secrets) replaced by ``***``."""
        for secret in sorted(self.secrets(*extra), key=len, reverse=True):
            text = text.replace(secret, _MASK)
        return text


def load_credentials(venue: str = "deribit", path: str | Path | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials:
    """The venue's key pair: from ``path`` when given (a JSON object with ``client_id`` and
    ``client_secret``, or ``NAME=value`` lines with the environment variables' names), otherwise
    from the environment variables ``ENV_VARS[venue]``.

    A file that its group or others may read (or write) is refused: chmod 600 it."""
    if venue not in ENV_VARS:
        raise CredentialsError(f"no credentials scheme for venue {venue!r} (known: "
                               f"{', '.join(ENV_VARS)})", field="venue")
    id_var, secret_var = ENV_VARS[venue]
    if path is not None:
        return _need_account(venue, _from_file(Path(path), id_var, secret_var, ACCOUNT_VARS.get(venue)))
    env = os.environ if environ is None else environ
    missing = [v for v in (id_var, secret_var) if not env.get(v, "").strip()]
    if missing:
        raise CredentialsError(f"{' and '.join(missing)} not set: set both environment variables "
                               f"or give --credentials FILE (readable only by you)",
                               source="environment", field=missing[0])
    account = env.get(ACCOUNT_VARS.get(venue, ""), "").strip() or None
    return _need_account(venue, Credentials(env[id_var].strip(), env[secret_var].strip(),
                                            source="environment", account=account))


def _need_account(venue: str, creds: Credentials) -> Credentials:
    """Derive's key acts for one subaccount: its id is part of the credentials."""
    if venue in ACCOUNT_VARS and not creds.account:
        raise CredentialsError(f"no subaccount id: set {ACCOUNT_VARS[venue]} (or subaccount_id in "
                               f"the credentials file)", source=creds.source, field="subaccount_id")
    return creds


def _from_file(path: Path, id_var: str, secret_var: str, account_var: str | None = None) -> Credentials:
    where = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CredentialsError("no such credentials file", source=where) from None
    except OSError as exc:
        raise CredentialsError(f"cannot read the credentials file ({exc.strerror})",
                               source=where) from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError("the credentials file is not a regular file", source=where)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"the credentials file may be read or written by others (mode "
                               f"{stat.S_IMODE(info.st_mode):o}): run chmod 600 on it", source=where)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialsError(f"cannot read the credentials file ({why})", source=where) from None
    values: dict[str, str] = {}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            # the parser's message may quote the file: say only where it broke
            raise CredentialsError("the credentials file is not valid JSON", source=where) from None
        if not isinstance(data, dict):
            raise CredentialsError("the credentials file must hold a JSON object", source=where)
        values = {str(k): str(v) for k, v in data.items() if v is not None}
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise CredentialsError("expected NAME=value", source=where, row=i)
            k, v = line.split("=", 1)
            values[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    client_id = values.get("client_id") or values.get(id_var) or \
        next((values[a] for a in _ALIASES["client_id"] if values.get(a)), None)
    secret = values.get("client_secret") or values.get(secret_var) or \
        next((values[a] for a in _ALIASES["client_secret"] if values.get(a)), None)
    account = values.get("subaccount_id") or (values.get(account_var) if account_var else None)
    for name, value in (("client_id", client_id), ("client_secret", secret)):
        if not value:
            raise CredentialsError(f"no {name} (or {id_var if name == 'client_id' else secret_var})",
                                   source=where, field=name)
    return Credentials(client_id, secret, source=where, account=account or None)  # type: ignore[arg-type]
