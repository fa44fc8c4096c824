"""A client of a district SIS's OneRoster 1.2 rostering service: OAuth2 client credentials, paging, retries.

Library: Authlib's httpx2 integration (https://docs.authlib.org/en/latest/client/httpx.html). Chosen over
requests-oauthlib because (1) it re-fetches a client-credentials token by itself when the token expires
(`OAuth2Client.ensure_active_token` with `grant_type="client_credentials"`), where requests-oauthlib only
refreshes with a refresh token, and (2) requests-oauthlib logs the token request body and the token response at
DEBUG (`OAuth2Session.fetch_token`), which would put the client secret and access tokens into logs. Aula never
logs either: this module logs resource names, offsets and status codes only. HTTP cost is small next to
applying records (benchmarks/sis_sync.py reports both).

Paging follows OneRoster 1.2 (REST binding, section 3.4): `limit`/`offset`, the total in `X-Total-Count`, the
next page in a `Link: <...>; rel="next"` header; deltas use `filter=dateLastModified>'<ISO 8601>'`. A SIS may
serve fewer records than asked for (many cap `limit`, often at 100), so without a total or a next link a short
page is no end: the collection ends at the first empty page.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class SisError(Exception):
    """The SIS could not be read (after retries) or refused Aula; `transient` errors are worth resuming."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass
class Page:
    records: list
    total: int | None
    next_offset: int | None
    server_time: dt.datetime | None


def _http_date(response: httpx2.Response) -> dt.datetime | None:
    value = response.headers.get("date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(dt.UTC)
    except (TypeError, ValueError):
        return None


def _next_offset(response: httpx2.Response, offset: int, count: int, total: int | None) -> int | None:
    nxt = response.links.get("next")
    if nxt and nxt.get("url"):
        values = parse_qs(urlsplit(nxt["url"]).query).get("offset")
        if values and values[0].isdigit() and int(values[0]) > offset:
            return int(values[0])
    if count == 0:
        return None
    if total is not None:
        return offset + count if offset + count < total else None
    return offset + count  # a short page may be the SIS's own cap on `limit`: only an empty page ends


def _token_failure(exc: Exception) -> tuple[SisError, httpx2.Response | None]:
    """What a failed token request means, never quoting the request (it holds the secret): the error, and the
    response to honour a Retry-After from."""
    if isinstance(exc, OAuthError):
        # The error code only (invalid_client, invalid_scope).
        return SisError(f"The SIS's token endpoint refused Aula's client credentials ({exc.error}).",
                        transient=False), None
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return SisError(f"The SIS's token endpoint answered HTTP {status}.",
                        transient=status in RETRY_STATUSES), exc.response
    return SisError(f"The SIS's token endpoint cannot be reached ({type(exc).__name__}).", transient=True), None


def filter_since(moment: dt.datetime) -> str:
    stamp = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"dateLastModified>'{stamp}'"


class OneRosterClient:
    """Reads collections of one rostering service. `sleep` and `backoff` are parameters so tests need not wait."""

    def __init__(self, *, base_url: str, token_url: str, client_id: str, client_secret: str, scope: str = "",
                 timeout: float = 30.0, retries: int = 5, backoff: float = 1.0, max_wait: float = 60.0,
                 sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self.retries, self.backoff, self.max_wait, self.sleep = retries, backoff, max_wait, sleep
        self.requests = 0
        self.token_fetches = 0
        self.http = OAuth2Client(client_id=client_id, client_secret=client_secret, scope=scope or None,
                                 token_endpoint=token_url, grant_type="client_credentials",
                                 timeout=httpx2.Timeout(timeout))

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _wait(self, attempt: int, response: httpx2.Response | None) -> None:
        delay = self.backoff * (2 ** attempt)
        if response is not None and response.headers.get("retry-after", "").isdigit():
            delay = max(delay, float(response.headers["retry-after"]))
        self.sleep(min(delay, self.max_wait))

    def fetch_token(self) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.token_fetches += 1
                self.http.fetch_token(self.token_url, grant_type="client_credentials")
                return
            except (OAuthError, httpx2.HTTPStatusError, httpx2.TransportError, ValueError) as exc:
                failure, response = _token_failure(exc)
                if not failure.transient or attempt == self.retries:
                    raise failure from None
                self._wait(attempt, response)

    def _ensure_token(self) -> None:
        """A token, fetched again once it is about to expire. Authlib would refresh it inside `http.get`, where
        its errors are not ours to retry and map; here they go through `fetch_token` like the first fetch."""
        token = self.http.token
        if not token or token.is_expired(leeway=self.http.leeway):
            self.fetch_token()

    def get(self, path: str, params: dict) -> httpx2.Response:
        """GET with the bearer token: a 401 fetches a new token once; 429/5xx and network errors are retried
        with exponential backoff (Retry-After honoured, capped). Every failure is a SisError."""
        refreshed = False
        attempt = 0
        while True:
            self._ensure_token()
            response = None
            try:
                self.requests += 1
                response = self.http.get(f"{self.base_url}/{path}", params=params)
            except httpx2.TransportError as exc:
                if attempt >= self.retries:
                    raise SisError(f"The SIS cannot be reached ({type(exc).__name__}) at {path}.",
                                   transient=True) from None
            except (OAuthError, httpx2.HTTPStatusError, ValueError) as exc:
                # Authlib refreshed the token itself after all: it expired between the check and the request, or
                # the SIS issues tokens that live less than the leeway.
                failure, token_response = _token_failure(exc)
                if not failure.transient or attempt >= self.retries:
                    raise failure from None
                log.info("sis: retrying %s (attempt %d, token endpoint)", path, attempt + 1)
                self._wait(attempt, token_response)
                attempt += 1
                continue
            else:
                if response.status_code == 401 and not refreshed:
                    refreshed = True
                    log.info("sis: token refused at %s, fetching a new one", path)
                    self.fetch_token()
                    continue
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise SisError(f"The SIS answered HTTP {response.status_code} at {path}.",
                                   transient=response.status_code in RETRY_STATUSES) from None
            log.info("sis: retrying %s (attempt %d, status %s)", path, attempt + 1,
                     response.status_code if response is not None else "network")
            self._wait(attempt, response)
            attempt += 1

    def page(self, path: str, key: str, *, offset: int, limit: int, since: dt.datetime | None = None) -> Page:
        params = {"limit": limit, "offset": offset, "sort": "sourcedId", "orderBy": "asc"}
        if since is not None:
            params["filter"] = filter_since(since)
        response = self.get(path, params)
        try:
            body = response.json()
        except ValueError:
            raise SisError(f"The SIS sent a page of {path} that is not JSON.", transient=True) from None
        records = body.get(key) if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise SisError(f"The SIS sent a page of {path} without a {key!r} list.", transient=True)
        total_header = response.headers.get("x-total-count", "")
        total = int(total_header) if total_header.isdigit() else None
        return Page(records=records, total=total,
                    next_offset=_next_offset(response, offset, len(records), total),
                    server_time=_http_date(response))
