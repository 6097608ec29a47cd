"""A stand-in identity server on loopback HTTPS, enough for Synapse to send a third-party invite.

Synapse looks an address up (`hash_details`, then `lookup`: this one knows nobody) and, when
nobody has it, asks the identity server to store the invite (`store-invite`) and sends an
`m.room.third_party_invite` state event into the room (synapse/handlers/identity.py,
synapse/handlers/room_member.py `do_3pid_invite`). Synapse only speaks HTTPS to identity
servers, so the server gets a self-signed certificate; the homeserver must run with
`IDENTITY_SERVER_SETTINGS` (certificate checks and the loopback blocklist off, safe only
because every address is 127.0.0.1).
"""

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness.federation import write_self_signed_cert

IDENTITY_SERVER_SETTINGS: dict[str, Any] = {
    "use_insecure_ssl_client_just_for_testing_do_not_use": True,
    "ip_range_blacklist": [],
    "federation_ip_range_blacklist": [],
}
# An Ed25519 public key in unpadded base64 (any 32 bytes do: nobody verifies it here).
_PUBLIC_KEY = "ZWQyNTUxOWtleWZvcnRoaXJkcGFydHlpbnZpdGVz"


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path.startswith("/_matrix/identity/v2/hash_details"):
            self._reply({"lookup_pepper": "pepper", "algorithms": ["none"]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.server.paths.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/_matrix/identity/v2/lookup"):
            self._reply({"mappings": {}})
        elif self.path.startswith("/_matrix/identity/v2/store-invite"):
            base = f"https://127.0.0.1:{self.server.server_address[1]}"
            self._reply(
                {
                    "token": f"invite-token-{len(self.server.paths)}",
                    "public_key": _PUBLIC_KEY,
                    "public_keys": [
                        {
                            "public_key": _PUBLIC_KEY,
                            "key_validity_url": f"{base}/_matrix/identity/v2/pubkey/isvalid",
                        }
                    ],
                    "display_name": "d...@example.org",
                }
            )
        else:
            self.send_error(404)


class _Server(ThreadingHTTPServer):
    paths: list[str]


@contextmanager
def identity_server(workdir: Path) -> Iterator[tuple[str, list[str]]]:
    """A running stand-in: yields its `id_server` value (host:port) and the paths it was asked."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = write_self_signed_cert(workdir)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.paths = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", httpd.paths
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
