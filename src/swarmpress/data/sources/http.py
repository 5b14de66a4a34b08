"""HTTP for network sources: JSON GETs with retries, backoff and rate-limit handling.

A 429 or a 5xx is retried after the server's Retry-After (seconds or an HTTP date) or an
exponential backoff with jitter, up to `retries` times, and so are transient transport
errors (a timeout, a connection reset or cut); a 401/403 is a credentials error at once
(retrying cannot fix it); other 4xx and a body that is not JSON are source errors that say
which URL and what came back. No network is not transient: a host name that does not
resolve, a network or host unreachable, a connection refused fail at once (NetworkError,
"no network: ..." naming the host) instead of backing off for a minute. Sleeping goes
through `sleep`, so tests run throttling cases against a local server without waiting.
"""

from __future__ import annotations

import email.utils
import errno
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx

from swarmpress.errors import AuthError, SwarmpressError  # AuthError: a 401/403, no token

USER_AGENT = "swarmpress-data/0.1 (+https://github.com/swarmpress)"
# Connect failures that mean no way to the host now, not a hiccup: retrying cannot help.
NO_ROUTE = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                      errno.ENETDOWN, errno.EADDRNOTAVAIL})  # fmt: skip
_sleep = time.sleep  # the default `sleep` (tests replace it)


class FetchError(SwarmpressError, RuntimeError):
    """A source that did not answer usefully (after retries); the message says why."""


class NetworkError(FetchError):
    """No network to the source: its host does not resolve or cannot be reached."""


def no_network(exc: BaseException, host: str, port: int | None) -> str | None:
    """Why a connect failure means no network (say so, do not retry), or None."""
    where = f"{host}:{port}" if port else host
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:  # the OSError under httpx's and httpcore's wrappers
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return f"no network: cannot resolve host {host!r} ({e.strerror or e})"
        if isinstance(e, OSError) and e.errno in NO_ROUTE:
            return f"no network: cannot connect to {where} ({e.strerror or e})"
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]
    return None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class JsonClient:
    """GET JSON with retries; one client (connection pool) per source."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 900.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, follow_redirects=True,
            headers={"User-Agent": USER_AGENT, **(headers or {})}, transport=transport,
        )  # fmt: skip
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self.sleep = sleep if sleep is not None else _sleep
        self.waited = 0.0  # seconds slept for rate limits and retries
        self.requests = 0

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                r = self.http.get(path, params=params)
            except httpx.ConnectError as exc:
                url = self._url(exc, path)
                why = no_network(exc, url.host, url.port)
                if why:
                    raise NetworkError(f"{why}; {url} not fetched") from None
                last = f"{type(exc).__name__}: {exc}"
                wait = self._backoff(attempt)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                wait = self._backoff(attempt)
            else:
                if r.status_code in (401, 403):
                    raise AuthError(f"{r.request.url}: {r.status_code} {_reason(r)}")
                if r.status_code == 429 or r.status_code >= 500:
                    last = f"{r.status_code} {_reason(r)}"
                    hinted = retry_after(r.headers.get("Retry-After"))
                    wait = self._backoff(attempt) if hinted is None else hinted
                    reset = r.headers.get("x-rate-limit-reset")  # X: epoch seconds
                    if hinted is None and reset and reset.isdigit():
                        wait = max(0.0, int(reset) - time.time())
                elif r.status_code >= 400:
                    raise FetchError(f"{r.request.url}: {r.status_code} {_reason(r)}")
                else:
                    try:
                        return r.json()
                    except (ValueError, RecursionError):  # RecursionError: nested too deep
                        raise FetchError(
                            f"{r.request.url}: the answer is not JSON "
                            f"({r.headers.get('content-type', '?')}: {r.text[:80]!r})"
                        ) from None
            if attempt == self.retries:
                break
            if wait > self.max_wait:
                raise FetchError(f"{self.http.base_url}{path}: asked to wait {wait:.0f} s "
                                 f"(more than {self.max_wait:.0f} s): {last}")  # fmt: skip
            self.waited += wait
            self.sleep(wait)
        raise FetchError(f"{self.http.base_url}{path}: gave up after "
                         f"{self.retries + 1} tries: {last}")  # fmt: skip

    def _url(self, exc: httpx.HTTPError, path: str) -> httpx.URL:
        try:
            return exc.request.url
        except RuntimeError:  # an error raised without its request
            return self.http.base_url.join(path)

    def _backoff(self, attempt: int) -> float:
        return self.backoff * (2**attempt) * (0.5 + random.random())

    def close(self) -> None:
        self.http.close()


def _reason(r: httpx.Response) -> str:
    try:
        body = r.json()
        msg = body.get("message") or body.get("detail") or body.get("title") or body.get("error")
    except (ValueError, AttributeError):
        msg = None
    return str(msg or r.reason_phrase)[:200]
