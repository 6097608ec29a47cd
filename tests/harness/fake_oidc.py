"""A fake OpenID Connect provider on loopback, and an SSO login driven the way a browser does it.

`running_fake_oidc()` serves discovery, `/authorize`, `/token`, `/userinfo` and `/jwks` on
127.0.0.1 from a thread (stdlib `http.server`). Id tokens are RS256 JWTs signed with a fresh RSA
key (`cryptography`), carrying the `nonce` Synapse sent, so Synapse validates them for real.
Identities are prepared per login (`prepare`): the returned hint rides on the `/authorize` URL
as `login_hint`, so `/authorize` logs that identity in without a form.

`sso_login()` runs the whole flow against a homeserver and returns a logged-in client:
`/login/sso/redirect/<idp>` → the fake `/authorize` → Synapse's `/_synapse/client/oidc/callback`
(carrying the `oidc_session` cookie, which is `Secure` and therefore set by hand over http) →
[for new users with `confirm_localpart: true`: Synapse's username picker → `sso_register`] →
the whitelisted client URL with `loginToken` → `POST /login` with `m.login.token`.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import attrs
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.harness.client import MatrixClient

# Synapse redirects straight here (no confirmation page) because `sso_extra` whitelists it.
CLIENT_REDIRECT = "http://127.0.0.1/done"
CLIENT_WHITELIST = "http://127.0.0.1/"
MAPPING_PROVIDER = "synapse_compliance.oidc.ComplianceOidcMappingProvider"
PICK_USERNAME = "/_synapse/client/pick_username/account_details"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@attrs.frozen
class FakeIdentity:
    """A user at the fake provider: its subject and the extra claims it logs in with."""

    sub: str
    claims: Mapping[str, Any]

    def userinfo(self) -> dict[str, Any]:
        """The userinfo response (also the id_token's user claims)."""
        return {**self.claims, "sub": self.sub}


@attrs.frozen
class _Grant:
    identity: FakeIdentity
    nonce: str | None
    redirect_uri: str
    client_id: str


class FakeOidcProvider:
    """State of one fake provider: its key, client credentials, prepared identities and grants."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.client_id = "synapse-test"
        self.client_secret = secrets.token_urlsafe(16)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._prepared: dict[str, FakeIdentity] = {}
        self._grants: dict[str, _Grant] = {}
        self._tokens: dict[str, FakeIdentity] = {}
        self.token_requests = 0

    # --- what tests call ------------------------------------------------------------------

    def prepare(self, sub: str, claims: Mapping[str, Any] | None = None) -> str:
        """Make the next `/authorize` with the returned hint log in as `sub` with `claims`."""
        hint = secrets.token_urlsafe(8)
        with self._lock:
            self._prepared[hint] = FakeIdentity(sub, dict(claims or {}))
        return hint

    def provider_config(
        self,
        idp_id: str,
        compliance: Mapping[str, Any] | None,
        *,
        user_profile_method: str = "auto",
        mapping: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """An `oidc_providers` entry for this provider with the compliance mapping provider.

        `compliance=None` leaves the `compliance:` key out (for config-error tests); `mapping`
        adds or replaces keys of the mapping provider's config.
        """
        mapping_config: dict[str, Any] = {"localpart_template": "{{ user.preferred_username }}"}
        if compliance is not None:
            mapping_config["compliance"] = dict(compliance)
        mapping_config.update(mapping or {})
        return {
            "idp_id": idp_id,
            "idp_name": f"Fake {idp_id}",
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "client_auth_method": "client_secret_post",
            "scopes": ["openid", "profile"],
            "user_profile_method": user_profile_method,
            "user_mapping_provider": {"module": MAPPING_PROVIDER, "config": mapping_config},
            **overrides,
        }

    # --- the endpoints ----------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """`/.well-known/openid-configuration`."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "scopes_supported": ["openid", "profile"],
        }

    def jwks(self) -> dict[str, Any]:
        """`/jwks`: the public half of the signing key."""
        public = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self._kid,
                    "n": _b64url_int(public.n),
                    "e": _b64url_int(public.e),
                }
            ]
        }

    def authorize(self, query: Mapping[str, str]) -> tuple[int, str]:
        """`/authorize`: a redirect back to the client with a code, or (400, error)."""
        if query.get("response_type") != "code" or query.get("client_id") != self.client_id:
            return 400, "unsupported response_type or unknown client_id"
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri:
            return 400, "redirect_uri missing"
        with self._lock:
            identity = self._prepared.pop(query.get("login_hint", ""), None)
            if identity is None:
                return 400, "no identity prepared for this login_hint"
            code = secrets.token_urlsafe(16)
            self._grants[code] = _Grant(identity, query.get("nonce"), redirect_uri, self.client_id)
        params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        separator = "&" if "?" in redirect_uri else "?"
        return 302, f"{redirect_uri}{separator}{urlencode(params)}"

    def token(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """`/token` (client_secret_post): an access token and a signed id_token."""
        with self._lock:
            self.token_requests += 1
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return 401, {"error": "invalid_client"}
            if form.get("grant_type") != "authorization_code":
                return 400, {"error": "unsupported_grant_type"}
            grant = self._grants.pop(form.get("code", ""), None)
            if grant is None or grant.redirect_uri != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant"}
            access_token = secrets.token_urlsafe(24)
            self._tokens[access_token] = grant.identity
        now = int(time.time())
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            **grant.identity.userinfo(),
            "iss": self.issuer,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 600,
            "at_hash": _b64url(digest[: len(digest) // 2]),
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 600,
            "id_token": self._sign(claims),
        }

    def userinfo(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """`/userinfo` for a bearer access token."""
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            identity = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if identity is None:
            return 401, {"error": "invalid_token"}
        return 200, identity.userinfo()

    def _sign(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self._kid}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(dict(claims)).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        pass

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        idp = self.server.idp
        url = urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            self._send(200, idp.discovery())
        elif url.path == "/jwks":
            self._send(200, idp.jwks())
        elif url.path == "/authorize":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, target = idp.authorize(query)
            if status == 302:
                self._send(302, "", {"Location": target})
            else:
                self._send(status, target)
        elif url.path == "/userinfo":
            self._send(*idp.userinfo(self.headers.get("Authorization")))
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        idp = self.server.idp
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if urlsplit(self.path).path == "/token":
            self._send(*idp.token(form))
        else:
            self._send(404, {"error": "not_found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, idp_factory: type[FakeOidcProvider]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.idp = idp_factory(int(self.server_address[1]))


@contextmanager
def running_fake_oidc() -> Iterator[FakeOidcProvider]:
    """Serve a fake provider on an ephemeral loopback port; always shut it down afterwards."""
    server = _Server(FakeOidcProvider)
    thread = threading.Thread(target=server.serve_forever, name="fake-oidc", daemon=True)
    thread.start()
    try:
        yield server.idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sso_extra(*providers: Mapping[str, Any]) -> dict[str, Any]:
    """homeserver.yaml keys for `running_homeserver(extra=...)`: the providers and the whitelist."""
    return {"oidc_providers": [dict(p) for p in providers], "sso": {"client_whitelist": [CLIENT_WHITELIST]}}


class SsoLoginFailed(AssertionError):
    """A step of the SSO flow did not answer as a successful login would."""


def _expect_redirect(r: httpx.Response, step: str) -> str:
    if r.status_code not in (301, 302, 303, 307):
        raise SsoLoginFailed(f"{step}: expected a redirect, got {r.status_code}: {r.text[:2000]}")
    return r.headers["Location"]


def _cookie_pairs(r: httpx.Response, prefix: str) -> list[str]:
    return [
        header.split(";", 1)[0].strip()
        for header in r.headers.get_list("set-cookie")
        if header.startswith(prefix)
    ]


def _pick_username(browser: httpx.Client, base_url: str, r: httpx.Response, username: str | None) -> str:
    """Fill in Synapse's username picker (shown to new users with `confirm_localpart: true`)."""
    if username is None:
        raise SsoLoginFailed("Synapse asked for a username; pass pick_username=")
    cookie = "; ".join(_cookie_pairs(r, "username_mapping_session"))
    r = browser.post(
        urljoin(base_url, PICK_USERNAME),
        data={"username": username},
        headers={"Cookie": cookie},
    )
    register_url = urljoin(base_url, _expect_redirect(r, "pick_username"))
    r = browser.get(register_url, headers={"Cookie": cookie})
    return _expect_redirect(r, "sso_register")


def sso_login(
    base_url: str,
    idp: FakeOidcProvider,
    idp_id: str,
    *,
    sub: str,
    claims: Mapping[str, Any] | None = None,
    pick_username: str | None = None,
) -> MatrixClient:
    """Log in through Synapse's SSO flow as `sub` with `claims`; return the logged-in client.

    `idp_id` is the provider's id as configured (Synapse's `oidc-<idp_id>`). New users get the
    localpart from `claims["preferred_username"]` (the provider config's `localpart_template`),
    or, when Synapse shows its username picker, `pick_username`.

    Raises:
        SsoLoginFailed: some step answered otherwise than a successful login (with the page).
    """
    hint = idp.prepare(sub, claims)
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        r = browser.get(
            f"{base_url}/_matrix/client/v3/login/sso/redirect/oidc-{idp_id}",
            params={"redirectUrl": CLIENT_REDIRECT},
        )
        authorize_url = _expect_redirect(r, "login/sso/redirect")
        # Synapse's session cookies are `Secure`, which an http cookie jar would not send back.
        cookies = "; ".join(_cookie_pairs(r, "oidc_session"))
        if not cookies:
            raise SsoLoginFailed(f"login/sso/redirect set no oidc_session cookie: {r.headers}")
        separator = "&" if "?" in authorize_url else "?"
        r = browser.get(f"{authorize_url}{separator}{urlencode({'login_hint': hint})}")
        callback_url = _expect_redirect(r, "fake /authorize")
        r = browser.get(callback_url, headers={"Cookie": cookies})
        client_url = _expect_redirect(r, "oidc/callback")
        if client_url.startswith(PICK_USERNAME):  # a relative redirect to Synapse's own page
            client_url = _pick_username(browser, base_url, r, pick_username)
    if not client_url.startswith(CLIENT_REDIRECT):
        raise SsoLoginFailed(f"oidc/callback redirected elsewhere: {client_url}")
    login_token = parse_qs(urlsplit(client_url).query)["loginToken"][0]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        r = http.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": login_token})
    if r.status_code != 200:
        raise SsoLoginFailed(f"m.login.token: {r.status_code}: {r.text}")
    body = r.json()
    return MatrixClient(base_url, body["user_id"], body["access_token"])
