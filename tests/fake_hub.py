"""A minimal stand-in for the Hugging Face Hub HTTP API, for upload tests (loopback only).

It implements just what ``HfApi.create_repo`` + ``HfApi.upload_folder`` call in huggingface_hub 2.x:

- ``POST /api/repos/create``                         -> ``{"url": ...}`` (409 if it exists)
- ``POST /api/validate-yaml``                        -> no errors (README.md metadata check)
- ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``  -> every file ``"uploadMode": "regular"``, so
  file contents come inline in the commit (no LFS / Xet transfer)
- ``POST /api/{type}s/{ns}/{name}/commit/{rev}``     -> reads the NDJSON body (base64 file contents)

Anything else answers 404 and is recorded in ``unexpected``. Every request is logged in
``requests`` (method, path, headers). With ``token`` set, a request without
``Authorization: Bearer <token>`` gets 401, and the error message echoes the header it got. Bodies are capped at ``max_body`` bytes.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_REPO = r"/api/(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)"
_PREUPLOAD = re.compile(_REPO + r"/preupload/(?P<rev>[^/?]+)")
_COMMIT = re.compile(_REPO + r"/commit/(?P<rev>[^/?]+)")


class FakeHub:
    """Context manager running the fake Hub in a daemon thread on 127.0.0.1:<free port>."""

    def __init__(self, token: str | None = None, max_body: int = 64 * 1024 * 1024):
        self.token = token
        self.max_body = max_body
        self.requests: list[dict] = []
        self.unexpected: list[str] = []
        self.repos: dict[str, dict] = {}  # repo_id -> create payload
        self.files: dict[str, dict[str, bytes]] = {}  # repo_id -> path -> content
        self.commits: list[dict] = []  # commit headers
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- request handling (called from the handler thread) ------------------------------
    def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers})
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            # echo what was received, like a careless server: the client must not repeat it
            return 401, {"error": f"Invalid credentials in Authorization header {headers.get('authorization')!r}"}
        path = path.split("?", 1)[0]
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and (m := _PREUPLOAD.fullmatch(path)):
            return self._preupload(m["repo"], json.loads(body))
        if method == "POST" and (m := _COMMIT.fullmatch(path)):
            return self._commit(m["repo"], body)
        with self._lock:
            self.unexpected.append(f"{method} {path}")
        return 404, {"error": f"fake hub does not implement {method} {path}"}

    def _create(self, payload: dict) -> tuple[int, dict]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
            self.repos[repo_id] = payload
            self.files[repo_id] = {}
        return 200, {"url": f"{self.endpoint}/{repo_id}"}

    def _preupload(self, repo_id: str, payload: dict) -> tuple[int, dict]:
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found"}
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        return 200, {"files": files, "commitOid": "0" * 40}

    def _commit(self, repo_id: str, body: bytes) -> tuple[int, dict]:
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found"}
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                with self._lock:
                    self.commits.append(item["value"])
            elif item["key"] == "file":
                value = item["value"]
                assert value["encoding"] == "base64", value
                with self._lock:
                    self.files[repo_id][value["path"]] = base64.b64decode(value["content"])
            else:
                return 400, {"error": f"fake hub does not support commit operation {item['key']!r}"}
        oid = f"{len(self.commits):040x}"
        return 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid}


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real client expects
        timeout = 10  # a stuck client cannot hold a thread forever

        def _dispatch(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > hub.max_body:
                self._reply(413, {"error": "body too large for the fake hub"})
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload = hub.handle(self.command, self.path, headers, body)
            except Exception as err:  # a malformed request is a test failure, reported as 500
                hub.unexpected.append(f"{self.command} {self.path}: {err!r}")
                status, payload = 500, {"error": repr(err)}
            self._reply(status, payload)

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _dispatch

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler
