"""A district SIS simulated for tests and benchmarks: a real HTTP server (a thread on 127.0.0.1) that serves
OneRoster 1.2 rostering collections behind an OAuth2 client-credentials token endpoint.

It pages with limit/offset (X-Total-Count, Link rel="next"), filters on dateLastModified, and lets a test change
records between syncs, inject malformed records, answer 429/500, revoke tokens, fail the token endpoint, and hold
a request until the test has killed the worker that made it. It can also behave like the SISes Aula must survive:
one that caps `limit` and sends neither a total nor a next link (`max_limit`, `totals`, `links`), one that answers
a collection with an empty list (`empty`), one that ignores `offset`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

PREFIX = "/ims/oneroster/rostering/v1p2"
COLLECTIONS = ["orgs", "academicSessions", "courses", "classes", "users", "enrollments"]
FILTER = re.compile(r"^dateLastModified>'([^']+)'$")


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Fault:
    def __init__(self, status: int, times: int, collection: str | None, offset: int | None, retry_after: int | None):
        self.status, self.times, self.collection, self.offset = status, times, collection, offset
        self.retry_after = retry_after


class OneRosterSIS:
    """The SIS: `records[collection][sourcedId] = record`; `set`/`delete` stamp dateLastModified."""

    def __init__(self, client_id: str = "aula", client_secret: str | None = None, token_ttl: int = 3600):
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.token_ttl = token_ttl
        self.records: dict[str, dict[str, dict]] = {c: {} for c in COLLECTIONS}
        self.extra: dict[str, list] = {c: [] for c in COLLECTIONS}  # malformed entries served as they are
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.requests: list[dict] = []  # every collection request: path, params, status
        self.faults: list[Fault] = []
        self.holds: dict[tuple[str, int], tuple[threading.Event, threading.Event]] = {}
        self.lock = threading.Lock()
        self.clock_skew = dt.timedelta(0)
        self.max_limit: int | None = None  # the SIS serves at most this many records a page, whatever Aula asks
        self.totals = True  # send X-Total-Count
        self.links = True  # send Link rel="next"
        self.ignore_offset = False  # always the first page
        self.empty: set[str] = set()  # collections answered with an empty list (200)
        self.token_faults: list[Fault] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> OneRosterSIS:
        self.thread.start()
        return self

    def stop(self) -> None:
        for reached, release in self.holds.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.url + PREFIX

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.clock_skew

    # --- data -----------------------------------------------------------------------------------------------------

    def set(self, collection: str, record: dict, *, modified: dt.datetime | None = None) -> dict:
        record = {"status": "active", **record, "dateLastModified": _stamp(modified or self.now())}
        with self.lock:
            self.records[collection][record["sourcedId"]] = record
        return record

    def load(self, roster: dict[str, list[dict]], *, modified: dt.datetime | None = None) -> None:
        for collection, records in roster.items():
            for record in records:
                self.set(collection, record, modified=modified)

    def update(self, collection: str, sourced_id: str, **changes) -> dict:
        return self.set(collection, {**self.records[collection][sourced_id], **changes})

    def tombstone(self, collection: str, sourced_id: str) -> dict:
        return self.update(collection, sourced_id, status="tobedeleted")

    def remove(self, collection: str, sourced_id: str) -> None:
        """The SIS forgets the record (no tombstone): only a full reconciliation notices."""
        with self.lock:
            del self.records[collection][sourced_id]

    def inject(self, collection: str, entry) -> None:
        """Serve `entry` (anything JSON) in the collection as it is, whatever the filter."""
        with self.lock:
            self.extra[collection].append(entry)

    # --- faults ---------------------------------------------------------------------------------------------------

    def fail(self, status: int, *, times: int = 1, collection: str | None = None, offset: int | None = None,
             retry_after: int | None = None) -> None:
        with self.lock:
            self.faults.append(Fault(status, times, collection, offset, retry_after))

    def fail_token(self, status: int, *, times: int = 1, after: int = 0, error: str | None = None) -> None:
        """The token endpoint answers `status` `times` times once it has issued `after` more tokens; with `error`,
        an OAuth2 error body ({"error": ...}), else a body that is not a token (a gateway's page)."""
        with self.lock:
            fault = Fault(status, times, None, None, None)
            fault.after, fault.error = self.token_requests + after, error
            self.token_faults.append(fault)

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def hold(self, collection: str, offset: int) -> threading.Event:
        """The next request for this page waits (until `release`); the returned event is set when it arrives."""
        reached, release = threading.Event(), threading.Event()
        self.holds[(collection, offset)] = (reached, release)
        return reached

    def release(self, collection: str, offset: int) -> None:
        self.holds.pop((collection, offset))[1].set()

    def collection_requests(self, collection: str) -> list[dict]:
        return [r for r in self.requests if r["collection"] == collection]

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def _handler(self):
        sis = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def date_time_string(self, timestamp=None):
                from email.utils import format_datetime

                return format_datetime(sis.now(), usegmt=True)

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if urlsplit(self.path).path != "/token":
                    return self._send(404, {"error": "not_found"})
                with sis.lock:
                    sis.token_requests += 1
                    fault = next((f for f in sis.token_faults if f.times > 0 and sis.token_requests > f.after), None)
                    if fault is not None:
                        fault.times -= 1
                if fault is not None:
                    return self._send(fault.status, {"error": fault.error} if fault.error else {"oops": "gateway"})
                client_id, client_secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
                if form.get("grant_type") != ["client_credentials"]:
                    return self._send(400, {"error": "unsupported_grant_type"})
                if (client_id, client_secret) != (sis.client_id, sis.client_secret):
                    return self._send(401, {"error": "invalid_client"})
                token = secrets.token_urlsafe(24)
                with sis.lock:
                    sis.tokens.add(token)
                return self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": sis.token_ttl,
                                        "scope": form.get("scope", [""])[0]}, {"Cache-Control": "no-store"})

            def do_GET(self):
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                collection = url.path[len(PREFIX) + 1:] if url.path.startswith(PREFIX + "/") else ""
                if collection not in COLLECTIONS:
                    return self._send(404, {"error": "not_found"})
                try:
                    offset, limit = int(params.get("offset", 0)), int(params.get("limit", 100))
                except ValueError:
                    return self._send(400, {"error": "invalid paging"})
                limit = min(limit, sis.max_limit or limit)
                if sis.ignore_offset:
                    offset = 0
                entry = {"collection": collection, "params": params, "status": 200}
                sis.requests.append(entry)
                hold = sis.holds.get((collection, offset))
                if hold is not None:
                    hold[0].set()
                    hold[1].wait(60)
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in sis.tokens:
                    entry["status"] = 401
                    return self._send(401, {"imsx_codeMajor": "failure", "imsx_description": "invalid token"})
                with sis.lock:
                    fault = next((f for f in sis.faults if f.times > 0 and f.collection in (None, collection)
                                  and f.offset in (None, offset)), None)
                    if fault is not None:
                        fault.times -= 1
                if fault is not None:
                    entry["status"] = fault.status
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return self._send(fault.status, {"imsx_codeMajor": "failure"}, headers)
                since = None
                if "filter" in params:
                    match = FILTER.match(params["filter"])
                    if not match:
                        return self._send(400, {"imsx_codeMajor": "failure", "imsx_description": "bad filter"})
                    since = match.group(1)
                with sis.lock:
                    rows = sorted(sis.records[collection].values(), key=lambda r: r["sourcedId"])
                    if since is not None:
                        rows = [r for r in rows if r["dateLastModified"] > since]
                    rows = rows + list(sis.extra[collection])
                if collection in sis.empty:
                    rows = []
                total = len(rows)
                page = rows[offset:offset + limit]
                headers = {"X-Total-Count": str(total)} if sis.totals else {}
                if offset + limit < total and sis.links:
                    nxt = urlencode({**params, "offset": offset + limit})
                    headers["Link"] = f'<{sis.base_url}/{collection}?{nxt}>; rel="next"'
                return self._send(200, {collection: page}, headers)

        return Handler


# --- rosters ---------------------------------------------------------------------------------------------------


def ref(sourced_id: str, kind: str) -> dict:
    return {"sourcedId": sourced_id, "type": kind, "href": f"/{kind}s/{sourced_id}"}


def district_roster(*, prefix: str = "", users: int = 40, schools: int = 2, class_size: int = 20,
                    classes_per_student: int = 1) -> dict[str, list[dict]]:
    """A district's roster as a SIS serves it: `users` people (one teacher per class, the rest students), each
    student in `classes_per_student` classes of their school, each class with its teacher."""
    p = prefix
    district = f"{p}dist"
    orgs = [{"sourcedId": district, "name": f"{p}District", "type": "district", "identifier": f"{p}D"}]
    orgs += [{"sourcedId": f"{p}sch-{s}", "name": f"{p}School {s}", "type": "school", "identifier": f"{p}S{s}",
              "parent": ref(district, "org")} for s in range(schools)]
    sessions = [
        {"sourcedId": f"{p}sy", "title": "2026-27", "type": "schoolYear", "startDate": "2026-08-15",
         "endDate": "2027-06-15", "schoolYear": "2027"},
        {"sourcedId": f"{p}term-1", "title": "Fall 2026", "type": "term", "startDate": "2026-08-15",
         "endDate": "2026-12-20", "schoolYear": "2027", "parent": ref(f"{p}sy", "academicSession")},
    ]
    courses = [{"sourcedId": f"{p}crs-{s}", "title": f"Course {s}", "courseCode": f"C{s}",
                "schoolYear": ref(f"{p}sy", "academicSession"), "org": ref(f"{p}sch-{s}", "org"),
                "grades": ["09"], "subjects": ["Science"]} for s in range(schools)]
    n_classes = max(1, round(users / (class_size + 1)))
    students = users - n_classes
    classes, people, enrollments = [], [], []
    for c in range(n_classes):
        s = c % schools
        classes.append({"sourcedId": f"{p}cls-{c}", "title": f"Class {c}", "classCode": f"K{c}",
                        "classType": "scheduled", "location": f"Room {c}", "course": ref(f"{p}crs-{s}", "course"),
                        "school": ref(f"{p}sch-{s}", "org"), "terms": [ref(f"{p}term-1", "academicSession")],
                        "grades": ["09"], "subjects": ["Science"]})
        people.append(_person(p, f"t-{c}", "teacher", f"{p}sch-{s}"))
        enrollments.append({"sourcedId": f"{p}e-t-{c}", "role": "teacher", "primary": True,
                            "class": ref(f"{p}cls-{c}", "class"), "user": ref(f"{p}t-{c}", "user"),
                            "school": ref(f"{p}sch-{s}", "org")})
    for n in range(students):
        s = n % schools
        people.append(_person(p, f"u-{n}", "student", f"{p}sch-{s}"))
        school_classes = [c for c in range(n_classes) if c % schools == s] or [0]
        for k in range(classes_per_student):
            c = school_classes[(n // schools + k) % len(school_classes)]
            enrollments.append({"sourcedId": f"{p}e-{n}-{k}", "role": "student", "primary": False,
                                "class": ref(f"{p}cls-{c}", "class"), "user": ref(f"{p}u-{n}", "user"),
                                "school": ref(f"{p}sch-{c % schools}", "org"), "beginDate": "2026-08-20"})
    return {"orgs": orgs, "academicSessions": sessions, "courses": courses, "classes": classes, "users": people,
            "enrollments": enrollments}


def _person(p: str, sid: str, role: str, school: str) -> dict:
    return {"sourcedId": f"{p}{sid}", "enabledUser": True, "username": f"{p}{sid}", "givenName": f"Given {sid}",
            "familyName": f"Family {sid}", "email": f"{p}{sid}@sis.test", "identifier": sid.upper(),
            "roles": [{"roleType": "primary", "role": role, "org": ref(school, "org")}], "grades": ["09"]}
