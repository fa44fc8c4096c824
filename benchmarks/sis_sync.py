"""Time a OneRoster SIS sync of a large roster against a loopback SIS, with the CSV import of the same roster as
the baseline (evidence for docs/rostering.md).

    .venv/bin/python -m config.devservers env -- sh -c \
        '.venv/bin/python manage.py migrate -v0 && .venv/bin/python -m benchmarks.sis_sync --users 10000'

Phases, each in a fresh district of the same database: the first sync (delta mode, nothing synced before: every
record created), a full reconciliation rerun (every record unchanged), a delta after 1% of users and enrollments
changed, and `roster_csv_import` of the same roster as CSV files. HTTP time (the client's requests, measured
around `OneRosterClient.page`) is reported apart from the total. `--profile` prints the top of a cProfile of the
first sync.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import sys
import time
import zipfile


def _csv_bundle(roster: dict) -> bytes:
    def refs(value):
        return value["sourcedId"] if value else ""

    files = {
        "orgs.csv": (["sourcedId", "status", "name", "type", "identifier", "parentSourcedId"],
                     [[o["sourcedId"], "active", o["name"], o["type"], o["identifier"], refs(o.get("parent"))]
                      for o in roster["orgs"]]),
        "academicSessions.csv": (["sourcedId", "status", "title", "type", "startDate", "endDate",
                                  "parentSourcedId", "schoolYear"],
                                 [[s["sourcedId"], "active", s["title"], s["type"], s["startDate"], s["endDate"],
                                   refs(s.get("parent")), s["schoolYear"]] for s in roster["academicSessions"]]),
        "courses.csv": (["sourcedId", "status", "title", "courseCode", "schoolYearSourcedId", "orgSourcedId",
                         "grades", "subjects"],
                        [[c["sourcedId"], "active", c["title"], c["courseCode"], refs(c["schoolYear"]),
                          refs(c["org"]), ",".join(c["grades"]), ",".join(c["subjects"])] for c in roster["courses"]]),
        "classes.csv": (["sourcedId", "status", "title", "classCode", "classType", "location", "courseSourcedId",
                         "schoolSourcedId", "termSourcedIds", "grades", "subjects"],
                        [[c["sourcedId"], "active", c["title"], c["classCode"], c["classType"], c["location"],
                          refs(c["course"]), refs(c["school"]), ",".join(t["sourcedId"] for t in c["terms"]),
                          ",".join(c["grades"]), ",".join(c["subjects"])] for c in roster["classes"]]),
        "users.csv": (["sourcedId", "status", "enabledUser", "orgSourcedIds", "role", "username", "givenName",
                       "familyName", "email", "identifier", "grades"],
                      [[u["sourcedId"], "active", "true", u["roles"][0]["org"]["sourcedId"], u["roles"][0]["role"],
                        u["username"], u["givenName"], u["familyName"], u["email"], u["identifier"],
                        ",".join(u["grades"])] for u in roster["users"]]),
        "enrollments.csv": (["sourcedId", "status", "classSourcedId", "schoolSourcedId", "userSourcedId", "role",
                             "primary", "beginDate"],
                            [[e["sourcedId"], "active", refs(e["class"]), refs(e["school"]), refs(e["user"]),
                              e["role"], str(e["primary"]).lower(), e.get("beginDate", "")]
                             for e in roster["enrollments"]]),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, (header, rows) in files.items():
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(header)
            writer.writerows(rows)
            bundle.writestr(name, text.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sis_sync")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--classes-per-student", type=int, default=4)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--skip-csv", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from classrooms import services
    from compliance import sis_client, sis_sync
    from compliance.models import SisConnection, SisRun
    from compliance.rostering import roster_csv_import
    from tests.compliance.oneroster_sis import OneRosterSIS, district_roster

    tag = str(int(time.time()))
    roster = district_roster(users=args.users, schools=4, class_size=30, classes_per_student=args.classes_per_student)
    sis = OneRosterSIS().start()
    sis.load(roster, modified=sis.now() - dt.timedelta(days=1))  # a delta's overlap window excludes them
    http = [0.0]
    original_page = sis_client.OneRosterClient.page

    def timed_page(self, *a, **kw):
        started = time.perf_counter()
        try:
            return original_page(self, *a, **kw)
        finally:
            http[0] += time.perf_counter() - started

    sis_client.OneRosterClient.page = timed_page
    district = services.district_upsert(slug=f"bench-sis-{tag}", name="Bench SIS")
    conn = sis_sync.sis_connection_save(connection=SisConnection(
        district=district, base_url=sis.base_url, token_url=sis.token_url, client_id=sis.client_id,
        client_secret=sis.client_secret, page_size=args.page_size))
    figures = {"users": args.users, "enrollments": len(roster["enrollments"]),
               "records": sum(len(v) for v in roster.values()), "page_size": args.page_size, "cpus": os.cpu_count()}

    def run(mode: str, label: str) -> None:
        http[0] = 0.0
        queued = sis_sync.sis_sync_request(connection=conn, mode=mode, requested_by="benchmark")
        started = time.perf_counter()
        if args.profile and label == "first_sync":
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(sis_sync.sis_run_execute, run_id=queued.pk)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        else:
            sis_sync.sis_run_execute(run_id=queued.pk)
        seconds = time.perf_counter() - started
        done = SisRun.objects.get(pk=queued.pk)
        assert done.status == SisRun.Status.DONE, done.error
        figures[label] = {"seconds": round(seconds, 1), "http_seconds": round(http[0], 1),
                          "records_per_second": round(figures["records"] / seconds),
                          "counts": {k: {c: n for c, n in v.items() if n} for k, v in done.counts.items()}}
        print(f"{label}: {seconds:.1f}s (HTTP {http[0]:.1f}s) {figures[label]['counts']}", flush=True)

    run(SisRun.Mode.DELTA, "first_sync")
    run(SisRun.Mode.FULL, "full_rerun")
    step = 100
    for person in roster["users"][::step]:
        sis.update("users", person["sourcedId"], givenName=person["givenName"] + " Jr")
    for enrollment in roster["enrollments"][::step]:
        sis.tombstone("enrollments", enrollment["sourcedId"])
    run(SisRun.Mode.DELTA, "delta_1pct")
    sis.stop()

    if not args.skip_csv:
        other = services.district_upsert(slug=f"bench-csv-{tag}", name="Bench CSV")
        bundle = _csv_bundle(district_roster(prefix="csv-", users=args.users, schools=4, class_size=30,
                                             classes_per_student=args.classes_per_student))
        started = time.perf_counter()
        report = roster_csv_import(district=other, archive=bundle)
        seconds = time.perf_counter() - started
        assert report.applied, report.errors[:5]
        figures["csv_import_baseline"] = {"seconds": round(seconds, 1),
                                          "records_per_second": round(figures["records"] / seconds)}
        print(f"csv_import_baseline: {seconds:.1f}s", flush=True)
    print(json.dumps(figures, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
