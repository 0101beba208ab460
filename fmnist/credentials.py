"""Credentials for a tracking server: they reach MLflow through its own environment variables only, never a URI that
could end up in a param, tag, file, shell history or printed line."""

import os
import re
import urllib.parse

from fmnist.errors import UserError

USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def has_credentials(uri: str) -> bool:
    """Whether a URI with a network location carries a user name or password; UserError (printing none of it) if they are
    not percent-encoded: an encoded URI has exactly one '@' in its authority and none after it, a '%' only before two hex digits, and a
    port that is a number."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    if "@" not in rest or rest.startswith("/"):  # no credentials, or no network location (sqlite:///a@b.db)
        return False
    try:
        parts = urllib.parse.urlsplit(uri)
        userinfo = parts.netloc.rpartition("@")[0]
        clean = (parts.netloc.count("@") == 1 and "@" not in parts.path + parts.query + parts.fragment and (parts.port or 0) >= 0
                 and re.fullmatch(r"([^%]|%[0-9A-Fa-f]{2})*", userinfo) is not None)  # every % starts an escape
    except ValueError:
        clean = False
    if not clean:
        raise UserError(f"the tracking URI holds a user name and password that are not percent-encoded (one of @ : / # % ? in them); "
                        "percent-encode them (urllib.parse.quote(password, safe='')) or give them in "
                        f"{USERNAME_ENV} and {PASSWORD_ENV} and leave them out of the URI")
    return parts.username is not None or parts.password is not None


def without_credentials(uri: str) -> str:
    """The URI with any user:password@ taken out (what may be logged, written or printed)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def refuse_credentials(uri: str, where: str) -> None:
    """A user name or password written into a URI argument ends up in shell history, Hydra's folders and params: refuse it."""
    if has_credentials(uri):
        raise UserError(
            f"{where} holds a user name and password ({without_credentials(uri)} with them taken out); give them in "
            f"{USERNAME_ENV} and {PASSWORD_ENV} instead and leave them out of the URI"
        )


def credentials_from_environment() -> None:
    """MLFLOW_TRACKING_URI=http://user:password@host works: the pair moves to MLflow's own variables, the URI keeps neither."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not has_credentials(uri):
        return
    parts = urllib.parse.urlsplit(uri)
    if parts.username and not os.environ.get(USERNAME_ENV):
        os.environ[USERNAME_ENV] = urllib.parse.unquote(parts.username)
    if parts.password and not os.environ.get(PASSWORD_ENV):
        os.environ[PASSWORD_ENV] = urllib.parse.unquote(parts.password)
    os.environ["MLFLOW_TRACKING_URI"] = without_credentials(uri)
