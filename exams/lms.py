"""The outbound LMS grade-sync contract.

A delivery is an HTTP POST of the grade payload as JSON to AULA_LMS_GRADE_WEBHOOK with an
`Idempotency-Key` header (the same for every retry of one result) and an HMAC-SHA256 signature of the body
in `X-Aula-Signature` (key AULA_LMS_GRADE_SECRET). Any 2xx is delivered; 4xx other than 408/429 is
permanent; anything else is retried with exponential backoff.

A result whose activity was placed in the LMS through LTI goes instead to that placement's grade column over
LTI Assignment and Grade Services (`deliver_lti`, classrooms/lti_services.py `score_post`): same queue, same
retries, same status per result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request

from django.conf import settings

MAX_TRIES = 8


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def configured() -> bool:
    return bool(getattr(settings, "AULA_LMS_GRADE_WEBHOOK", ""))


def backoff(tries: int) -> int:
    return min(settings.AULA_LMS_GRADE_BACKOFF_SECONDS * 2 ** max(tries - 1, 0), 6 * 3600)


def deliver(payload: dict, *, idempotency_key: str) -> None:
    if not settings.AULA_LMS_GRADE_WEBHOOK.startswith(("https://", "http://")):
        raise DeliveryError("the webhook URL must be http(s)")
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    signature = hmac.new(settings.AULA_LMS_GRADE_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        settings.AULA_LMS_GRADE_WEBHOOK, data=body, method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                 "X-Aula-Signature": f"sha256={signature}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (scheme checked above)
            if not 200 <= response.status < 300:
                raise DeliveryError(f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DeliveryError(type(exc).__name__) from None


def deliver_lti(sync) -> None:
    """Post the result as an AGS score (userId = the student's subject on that LMS)."""
    from classrooms import lti_services

    p = sync.payload
    try:
        lti_services.score_post(
            link_id=sync.lti_link_id, user_id=sync.student_id,
            score_given=None if p.get("score") is None else float(p["score"]), score_maximum=float(p["max_score"]),
            timestamp=p["timestamp"], activity_progress=p.get("activity_progress", "Completed"),
            grading_progress=p.get("grading_progress", "FullyGraded"))
    except lti_services.ScoreError as exc:
        raise DeliveryError(str(exc), permanent=exc.permanent) from None
