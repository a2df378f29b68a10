"""A Hugging Face Hub stand-in on 127.0.0.1: the part of the Hub's HTTP API that
``huggingface_hub``'s ``HfApi.model_info`` and ``hf_hub_download`` use, so tests run the real
client (and the operator its real code path) with no network.

Served:

- ``GET /api/models/{id}`` and ``GET /api/models/{id}/revision/{rev}``: the repository's
  ``id``, ``sha`` (the commit the revision points at) and ``siblings`` (its files);
- ``GET /api/models/{id}/tree/{rev}[/{path}]`` (``?recursive=true``): the folder's entries as
  the Hub lists them, ``{"type": "file"|"directory", "path", "oid", "size"}``, which
  ``snapshot_download`` (``hf download``) reads after the revision's ``sha``. One page (the Hub
  pages by 1,000, linking the next with a ``Link`` header; the stand-in's repositories are
  small); every file is a plain git blob (no ``lfs`` or ``xetHash``: the client downloads it
  from ``resolve`` over HTTP), and ``?expand`` adds nothing (no ``lastCommit``);
- ``GET /api/agent-harnesses``: the registry of AI-agent harnesses the client (2.x) reads once a
  day (cached in HF_HOME) to name an agent in its User-Agent; served empty (no agent), as the
  client takes it when the Hub cannot be reached;
- ``HEAD`` / ``GET /{id}/resolve/{rev}/{file}``: the file, with the ``X-Repo-Commit`` and
  ``ETag`` headers the client caches by;
- errors as the Hub signals them (``X-Error-Code``): ``RepoNotFound`` (404, or 401 for a
  private repository without its token), ``RevisionNotFound``, ``EntryNotFound``, and
  ``GatedRepo`` (403) for a gated repository's files without an accepted token (its
  metadata stays public, as on the Hub).

Repositories are directories of files (the catalog's published configs, for instance; file
names may hold folders, ``original/consolidated.pth``) given an id, a commit per revision,
and optionally ``gated``/``private`` with the tokens that may read them.
``requests`` counts what was asked, for tests of caching.

``python -m e2e.hub --port 8765 ID=DIR ...`` serves directories from the command line.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    """One model repository: its files and who may read them."""

    id: str
    files: dict[str, bytes]
    revisions: dict[str, str] = field(default_factory=dict)  # name → commit; "main" always
    gated: bool = False
    private: bool = False
    tokens: frozenset[str] = frozenset()  # tokens that may read a gated or private repo

    def __post_init__(self) -> None:
        if "main" not in self.revisions:
            digest = hashlib.sha1(self.id.encode())
            for name in sorted(self.files):
                digest.update(name.encode() + b"\0" + self.files[name])
            self.revisions["main"] = digest.hexdigest()

    @classmethod
    def from_dir(cls, repo_id: str, directory: Path, **kwargs: object) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        return cls(repo_id, files, **kwargs)  # type: ignore[arg-type]

    def commit(self, revision: str | None) -> str | None:
        if revision is None:
            return self.revisions["main"]
        if revision in self.revisions:
            return self.revisions[revision]
        return revision if revision in self.revisions.values() else None


class HubStandIn:
    """The server; start with ``serve()`` (a context manager) or ``start()``/``stop()``."""

    def __init__(self, repos: Mapping[str, Repo] | None = None, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("the Hub stand-in serves on 127.0.0.0/8 only")
        self.repos: dict[str, Repo] = dict(repos or {})
        self.requests: Counter[str] = Counter()
        self.down = False  # answer every request with 503 (the Hub having trouble)
        self._host = host
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, repo: Repo) -> None:
        self.repos[repo.id] = repo

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self._host}:{self._server.server_address[1]}"

    def start(self, port: int = 0) -> str:
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer((self._host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def serve(self, port: int = 0) -> Iterator[HubStandIn]:
        self.start(port)
        try:
            yield self
        finally:
            self.stop()


class _Handler(BaseHTTPRequestHandler):
    stand_in: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    # --- routing ---------------------------------------------------------------------------

    def _answer(self, body: bool) -> None:
        hub = self.stand_in
        path = unquote(urlsplit(self.path).path)
        hub.requests[f"{self.command} {path}"] += 1
        if hub.down:
            return self._error(503, None, "Service Unavailable", body)
        if path == "/api/agent-harnesses":
            registry: dict[str, object] = {"standardEnvVars": [], "harnesses": {}}
            return self._send(200, json.dumps(registry).encode(), "application/json", {}, body)
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :]
            if "/tree/" in rest:
                return self._tree(rest, body)
            return self._info(rest, body)
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            return self._file(repo_id, revision, filename, body)
        return self._error(404, None, "Not Found", body)

    def _token(self) -> str | None:
        value = self.headers.get("Authorization") or ""
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def _repo(self, repo_id: str, body: bool, files: bool) -> Repo | None:
        repo = self.stand_in.repos.get(repo_id)
        token = self._token()
        if repo is None or (repo.private and token not in repo.tokens):
            code = 401 if repo is not None or token is None else 404
            self._error(code, "RepoNotFound", "Repository not found", body)
            return None
        if files and repo.gated and token not in repo.tokens:
            self._error(403, "GatedRepo", "Access to this model is restricted", body)
            return None
        return repo

    def _info(self, rest: str, body: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self._repo(repo_id, body, files=False)
        if repo is None:
            return
        commit = repo.commit(revision or None)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id", body)
        data = {
            "id": repo.id,
            "modelId": repo.id,
            "sha": commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            "tags": [],
        }
        self._send(200, json.dumps(data).encode(), "application/json", {}, body)

    def _tree(self, rest: str, body: bool) -> None:
        repo_id, _, at = rest.partition("/tree/")
        revision, _, folder = at.partition("/")
        repo = self._repo(repo_id, body, files=False)
        if repo is None:
            return
        if repo.commit(revision) is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id", body)
        query = parse_qs(urlsplit(self.path).query)
        recursive = query.get("recursive", ["false"])[-1].lower() in ("1", "true")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: dict[str, dict[str, object]] = {}
        for name in sorted(repo.files):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            # the folders on the way (all of them when recursive, else the first), then the file
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder_path = prefix + "/".join(parts[:depth])
                oid = hashlib.sha1(b"tree " + folder_path.encode()).hexdigest()
                entries.setdefault(
                    folder_path, {"type": "directory", "path": folder_path, "oid": oid, "size": 0}
                )
            if recursive or len(parts) == 1:
                data = repo.files[name]
                entries[name] = {
                    "type": "file",
                    "path": name,
                    "oid": _blob_id(data),
                    "size": len(data),
                }
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{folder} does not exist", body)
        payload = json.dumps(list(entries.values())).encode()
        self._send(200, payload, "application/json", {}, body)

    def _file(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self._repo(repo_id, body, files=True)
        if repo is None:
            return
        commit = repo.commit(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id", body)
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", body)
        data = repo.files[filename]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{_blob_id(data)}"'}
        self._send(200, data, "application/octet-stream", headers, body)

    # --- writing -----------------------------------------------------------------------------

    def _error(self, code: int, error_code: str | None, message: str, body: bool) -> None:
        headers = {"X-Error-Message": message}
        if error_code:
            headers["X-Error-Code"] = error_code
        payload = json.dumps({"error": message}).encode()
        self._send(code, payload, "application/json", headers, body)

    def _send(
        self, code: int, data: bytes, ctype: str, headers: Mapping[str, str], body: bool
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _blob_id(data: bytes) -> str:
    """The file's git blob id, as the Hub gives it (``oid``, and the ``ETag`` of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


__all__ = ["HubStandIn", "Repo"]
