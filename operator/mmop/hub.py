"""Model configs from the Hugging Face Hub (or a mirror): the shell's I/O for a
``spec.model.id`` outside the catalog.

For one (id, revision) it asks the Hub which commit the revision is and which files the
repository holds (``HfApi.model_info``), downloads the configs mmop reads (``model.MODEL_FILES``)
at that commit with ``hf_hub_download`` into the operator's cache directory, and builds the
profile with ``model.profile_from_files`` (pure). Results are kept per (endpoint, id, revision)
(and a digest of the token: another token is another question) while the operator runs, so
a reconcile reads nothing twice; a failure is kept as well, for a
backoff that doubles up to ``MAX_BACKOFF_SECONDS``, so an unreachable Hub is not asked on every
event.

Every failure is a :class:`HubError` with a condition reason and a message that says what to
do. The token, when a Secret is named, is passed to the client for that call only: it is never
logged or written anywhere, and the cache keeps only a digest of it.

Both `mmop plan`/`estimate` and the operator resolve through here; the planner never does I/O.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mmop.model import MODEL_FILES, ModelError, ModelProfile, profile_from_files

DEFAULT_ENDPOINT = "https://huggingface.co"
# Seconds a Hub call may take (connect and each read).
TIMEOUT_SECONDS = 10.0
# Backoff after a failure that a retry can fix (the Hub unreachable): doubles from the first
# figure up to the second.
FIRST_BACKOFF_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 600.0
# Entries the in-memory cache keeps (oldest dropped first).
MAX_ENTRIES = 256


class HubReason(StrEnum):
    """Why a model could not be read from the Hub: the Planned=False reason users see."""

    GATED = "GatedModel"
    NOT_FOUND = "ModelNotFound"
    REVISION_NOT_FOUND = "RevisionNotFound"
    UNREACHABLE = "HubUnreachable"
    NO_CONFIG = "ModelConfigMissing"
    UNREADABLE = "ModelConfigUnreadable"
    TOKEN_UNAVAILABLE = "TokenUnavailable"


# Reasons a later retry can fix without anyone changing anything (the Hub was down).
RETRYABLE = frozenset({HubReason.UNREACHABLE})


class HubError(Exception):
    def __init__(self, reason: HubReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


@dataclass(frozen=True)
class HubModel:
    """A repository's configs as read at one commit."""

    model_id: str
    revision: str | None  # as asked (None: the default branch)
    commit: str
    files: dict[str, dict[str, Any]]

    def profile(self) -> ModelProfile:
        try:
            return profile_from_files(self.model_id, self.files, origin="hub", commit=self.commit)
        except ModelError as err:
            raise HubError(HubReason.UNREADABLE, str(err)) from err


def fetch(
    model_id: str,
    revision: str | None,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    cache_dir: Path | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> HubModel:
    """Read a model's configs from the Hub at ``endpoint``; raises HubError."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{model_id}" + (f"@{revision}" if revision else "")
    # token=False: never the operator's own login or HF_TOKEN, only the Secret named.
    auth: str | bool = token or False
    try:
        info = HfApi(endpoint=endpoint, token=auth).model_info(
            model_id, revision=revision, timeout=timeout
        )
        commit = str(info.sha or "")
        names = {s.rfilename for s in info.siblings or []}
        wanted = [n for n in MODEL_FILES if n in names]
        if not any(n in names for n in ("config.json", "params.json")):
            raise HubError(
                HubReason.NO_CONFIG,
                f"{where} has no config.json or params.json at commit {commit[:12]}: "
                "not a model repository mmop can read",
            )
        if info.gated:
            # The client serves a commit's files from its disk cache without asking the Hub:
            # whether this token may read a gated repository is asked every time, so a read
            # made with another model's token never stands in for this one.
            get_hf_file_metadata(
                hf_hub_url(model_id, wanted[0], revision=commit or revision, endpoint=endpoint),
                token=auth,
                timeout=timeout,
                endpoint=endpoint,
            )
        files: dict[str, dict[str, Any]] = {}
        for name in wanted:
            path = hf_hub_download(
                model_id,
                name,
                revision=commit or revision,
                endpoint=endpoint,
                token=auth,
                cache_dir=cache_dir,
                etag_timeout=timeout,
            )
            files[name] = _parse(where, name, Path(path))
        return HubModel(model_id, revision, commit, files)
    except GatedRepoError as err:
        raise HubError(
            HubReason.GATED,
            f"{where} is gated: accept its license on the Hub with the account whose token "
            "spec.model.tokenSecretRef names ($HF_TOKEN for the CLI)"
            + ("" if token else " (no token was given)")
            + f" ({_status(err)})",
        ) from None
    except RevisionNotFoundError:
        raise HubError(
            HubReason.REVISION_NOT_FOUND,
            f"{model_id} has no revision {revision!r} (spec.model.revision)",
        ) from None
    except RepositoryNotFoundError as err:
        raise HubError(
            HubReason.NOT_FOUND,
            f"{model_id} was not found on {endpoint} ({_status(err)}); if it is private, give "
            "a token with access (spec.model.tokenSecretRef; $HF_TOKEN for the CLI)",
        ) from None
    except HfHubHTTPError as err:
        raise HubError(HubReason.UNREACHABLE, f"the Hub at {endpoint} answered {_status(err)} "
                       f"for {where}") from None  # fmt: skip
    except HubError:
        raise
    except Exception as err:  # connection refused, timeouts, TLS, DNS: all "unreachable"
        raise HubError(
            HubReason.UNREACHABLE,
            f"the Hub at {endpoint} could not be reached for {where}: {type(err).__name__}",
        ) from None


def _fingerprint(token: str | None) -> str:
    """A token's part of a cache key: a digest, so another token is another question and the
    value itself is kept nowhere."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


def _status(err: Any) -> str:
    response = getattr(err, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else type(err).__name__


def _parse(where: str, name: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HubError(HubReason.UNREADABLE, f"{where}: {name} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise HubError(HubReason.UNREADABLE, f"{where}: {name} is not a JSON object")
    return data


Fetch = Callable[..., HubModel]


@dataclass
class _Entry:
    model: HubModel | None = None
    error: HubError | None = None
    retry_at: float = 0.0
    failures: int = 0


@dataclass
class HubResolver:
    """Hub lookups with a cache per (endpoint, id, revision), shared by every reconcile of the
    operator (it lives in the OperatorContext). Thread-safe; one lookup per key at a time."""

    endpoint: str = DEFAULT_ENDPOINT
    cache_dir: Path | None = None
    timeout: float = TIMEOUT_SECONDS
    clock: Callable[[], float] = time.monotonic
    fetcher: Fetch = fetch
    _entries: dict[tuple[str, str, str, str], _Entry] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, model_id: str, revision: str | None, token: str | None = None) -> HubModel:
        """The model's configs; raises HubError (the cached one while its backoff runs)."""
        key = (self.endpoint, model_id, revision or "", _fingerprint(token))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.model is not None:
                return entry.model
            if entry is not None and entry.error is not None and self.clock() < entry.retry_at:
                raise entry.error
        try:
            found = self.fetcher(
                model_id,
                revision,
                endpoint=self.endpoint,
                token=token,
                cache_dir=self.cache_dir,
                timeout=self.timeout,
            )
        except HubError as err:
            with self._lock:
                entry = self._entries.setdefault(key, _Entry())
                entry.failures += 1
                entry.error = err
                # Fixable only by someone (a license, a token, the id): asked again at the
                # longest backoff, or at once when the spec changes (another key).
                wait = (
                    min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (entry.failures - 1))
                    if err.retryable
                    else MAX_BACKOFF_SECONDS
                )
                entry.retry_at = self.clock() + wait
                self._trim()
            raise
        with self._lock:
            self._entries[key] = _Entry(model=found)
            self._trim()
        return found

    def forget(self, model_id: str, revision: str | None) -> None:
        """Drop what is known of a model, with any token."""
        with self._lock:
            for key in [k for k in self._entries if k[1:3] == (model_id, revision or "")]:
                del self._entries[key]

    def _trim(self) -> None:
        while len(self._entries) > MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))
