"""Who is using the console: the identity write actions (promotions, job submissions) need and
record. Never a free-text name.

``RAYLANE_CONSOLE_AUTH`` picks where the identity comes from:

- ``oidc``: Streamlit's own login (``st.login``, an OpenID Connect provider configured in
  ``.streamlit/secrets.toml`` under ``[auth]``); the identity is the ID token's email (else its
  subject). The default when secrets configure ``[auth]``.
- ``proxy``: an authenticating reverse proxy in front (oauth2-proxy as a sidecar) sets a header,
  ``RAYLANE_CONSOLE_IDENTITY_HEADER`` (default ``X-Forwarded-Email``). Trusted only from a
  loopback peer and with the console bound to loopback: only the sidecar can set it.
- ``local``: the OS user, for a console bound to 127.0.0.1 (``make console``): whoever reaches
  it is already on this machine. Refused when Streamlit listens on another address. The default
  without ``[auth]``.

Anyone else is anonymous: pages read, write actions are refused.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

MODES = ("oidc", "proxy", "local")
DEFAULT_HEADER = "X-Forwarded-Email"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Identity:
    """The authenticated user (``name`` None: anonymous) and how the console knows."""

    name: str | None
    mode: str
    reason: str = ""

    @property
    def anonymous(self) -> bool:
        return not self.name


def mode(env: Mapping[str, str] | None = None, has_auth_secrets: bool | None = None) -> str:
    """The configured mode; ValueError naming RAYLANE_CONSOLE_AUTH for an unknown one."""
    env = os.environ if env is None else env
    chosen = env.get("RAYLANE_CONSOLE_AUTH", "").strip().lower()
    if chosen and chosen not in MODES:
        raise ValueError(f"RAYLANE_CONSOLE_AUTH: expected one of {list(MODES)}, got {chosen!r}")
    if chosen:
        return chosen
    if has_auth_secrets is None:
        has_auth_secrets = _has_auth_secrets()
    return "oidc" if has_auth_secrets else "local"


def current(env: Mapping[str, str] | None = None) -> Identity:
    """The identity of this script run's visitor."""
    env = os.environ if env is None else env
    how = mode(env)
    if how == "oidc":
        return _oidc()
    if how == "proxy":
        header = env.get("RAYLANE_CONSOLE_IDENTITY_HEADER", DEFAULT_HEADER)
        return from_proxy(dict(st.context.headers or {}), st.context.ip_address,
                          _bound_address(), header)
    return local(_bound_address())


def from_proxy(headers: Mapping[str, str], peer: str | None, bound: str | None,
               header: str = DEFAULT_HEADER) -> Identity:
    """The proxy's header, trusted only when the console listens on loopback and the request
    came from loopback (the sidecar): a header from anyone else is anybody's claim."""
    if not _is_loopback(bound):
        return Identity(None, "proxy", "the console must listen on 127.0.0.1 behind its proxy "
                        f"(server.address is {bound or 'every interface'})")
    if peer is not None and not _is_loopback(peer):
        return Identity(None, "proxy", f"the request came from {peer}, not the proxy")
    lowered = {k.lower(): v for k, v in headers.items()}
    name = (lowered.get(header.lower()) or "").strip()
    if not name:
        return Identity(None, "proxy", f"the proxy sent no {header} header")
    return Identity(name, "proxy")


def local(bound: str | None) -> Identity:
    """The OS user, when the console listens on loopback only."""
    if not _is_loopback(bound):
        return Identity(None, "local", "the console listens on "
                        f"{bound or 'every interface'} without a login; set "
                        "RAYLANE_CONSOLE_AUTH=oidc or proxy, or bind it to 127.0.0.1")
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return Identity(f"{user}@localhost", "local")


def _oidc() -> Identity:
    if not _has_auth_secrets():
        return Identity(None, "oidc", "no [auth] section in .streamlit/secrets.toml")
    if not st.user.get("is_logged_in", False):
        return Identity(None, "oidc", "not logged in")
    name = st.user.get("email") or st.user.get("sub")
    return Identity(str(name), "oidc") if name else Identity(None, "oidc", "no email or sub")


def _has_auth_secrets() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _bound_address() -> str | None:
    return st.get_option("server.address") or None


def _is_loopback(address: str | None) -> bool:
    return bool(address) and address.strip("[]") in LOOPBACK


def sign_in_box(who: Identity) -> None:
    """The sidebar's line about the visitor: who, or how to sign in."""
    if who.anonymous:
        st.caption(f"Not signed in: read-only ({who.reason}).")
        if who.mode == "oidc" and _has_auth_secrets():
            st.button("Log in", on_click=st.login, key="identity_login")
    else:
        st.caption(f"Signed in as **{who.name}** ({who.mode})")
        if who.mode == "oidc":
            st.button("Log out", on_click=st.logout, key="identity_logout")


def refuse_anonymous(who: Identity, action: str) -> bool:
    """Say why ``action`` is refused and return True when the visitor is anonymous."""
    if who.anonymous:
        st.warning(f"**Sign in to {action}.** {who.reason.capitalize()}.", icon=":material/lock:")
        return True
    return False
