"""Whiteboard and notes pages: history versions, course images, who may see what (and the FERPA record)."""

from __future__ import annotations

import base64
import io

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from PIL import Image
from pycrdt import Doc, Map

from classrooms import collab_services
from classrooms.models import CollabCheckpoint, CollabContribution, CourseFile

pytestmark = pytest.mark.django_db


def png_bytes(size=(40, 30), color=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_teachers_add_course_images_students_list_and_see_them_others_get_404(client, world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = reverse("collab-assets", args=[world.session_a.pk])
    client.force_login(world.student_a)
    refused = client.post(url, {"file": SimpleUploadedFile("a.png", png_bytes(), "image/png")})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    client.force_login(world.teacher_a)
    made = client.post(url, {"file": SimpleUploadedFile("diagram.png", png_bytes(), "image/png")})
    assert made.status_code == 201, made.content
    asset = made.json()
    assert asset["width"] == 40 and asset["name"] == "diagram.png"
    bad = client.post(url, {"file": SimpleUploadedFile("evil.png", b"<svg onload=alert(1)>", "image/png")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    client.force_login(world.student_a)
    listing = client.get(url).json()
    assert [a["id"] for a in listing["assets"]] == [asset["id"]] and listing["can_upload"] is False
    image = client.get(asset["url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert image["X-Content-Type-Options"] == "nosniff" and "sandbox" in image["Content-Security-Policy"]
    Image.open(io.BytesIO(image.content)).verify()
    client.force_login(world.student_b)  # another school's student
    assert client.get(url).status_code == 404 and client.get(asset["url"]).status_code == 404


def test_an_uploaded_image_is_re_encoded_without_its_metadata(world):
    img = Image.new("RGB", (20, 20), (0, 0, 255))
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    img.save(out, "JPEG", exif=exif.tobytes())
    f = collab_services.course_file_add(course=world.course_a, actor=world.teacher_a, name="photo.jpg",
                                        data=out.getvalue())
    assert b"SecretCam" not in bytes(f.data) and f.content_type == "image/jpeg"
    again = collab_services.course_file_add(course=world.course_a, actor=world.teacher_a, name="same.jpg",
                                            data=out.getvalue())
    assert again.pk == f.pk and CourseFile.objects.count() == 1


def test_history_lists_checkpoints_and_a_version_is_its_state_for_participants_only(client, world):
    document = collab_services.documents_ensure(world.session_a)["board"]
    doc = Doc()
    doc.get("elements", type=Map)["e1"] = Map({"type": "rect", "author": world.student_a.pk})
    state = doc.get_update()
    checkpoint = CollabCheckpoint.objects.create(document=document, upto=1, state=state, size=len(state))
    CollabContribution.objects.create(document=document, user=world.student_a, institution=world.school_a,
                                      elements_added=1)
    client.force_login(world.teacher_a)
    listing = client.get(reverse("collab-history", args=[world.session_a.pk, "board"])).json()
    assert [v["id"] for v in listing["versions"]] == [checkpoint.pk]
    version = client.get(reverse("collab-version", args=[world.session_a.pk, "board", checkpoint.pk])).json()
    restored = Doc()
    restored.apply_update(base64.b64decode(version["state"]))
    assert "e1" in restored.get("elements", type=Map)
    # Reading the class's work is a recorded access to the student's contribution.
    accesses = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, additional_data__purpose="collab.history")
    assert {e.additional_data["student"] for e in accesses} == {world.student_a.pk}
    assert client.get(reverse("collab-history", args=[world.session_a.pk, "slides"])).status_code == 404
    client.force_login(world.student_b)
    assert client.get(reverse("collab-history", args=[world.session_a.pk, "board"])).status_code == 404
    client.force_login(world.student_a)
    assert client.get(reverse("collab-version", args=[world.session_a.pk, "notes", checkpoint.pk])).status_code \
        == 404


def test_contributions_are_for_the_classs_teachers_and_school_staff_only(client, world):
    client.force_login(world.student_a)
    assert client.get(reverse("session-contributions", args=[world.session_a.pk])).status_code == 404
    client.force_login(world.staff_b)
    assert client.get(reverse("session-contributions", args=[world.session_a.pk])).status_code == 404


def test_compaction_folds_the_log_into_a_checkpoint_and_attributes_each_change_to_its_sender(client, world):
    from django.utils import timezone
    from pycrdt import Text

    from classrooms.models import CollabUpdate

    docs = collab_services.documents_ensure(world.session_a)
    board, notes = docs["board"], docs["notes"]
    student, teacher = Doc(), Doc()
    s_el, t_el = student.get("elements", type=Map), teacher.get("elements", type=Map)
    rows = []
    before = student.get_state()
    s_el["s1"] = Map({"type": "pen", "author": world.student_a.pk})
    rows.append((board.pk, world.student_a.pk, student.get_update(before)))
    before = student.get_state()
    s_el["s2"] = Map({"type": "sticky", "author": world.student_a.pk, "text": Text("hi")})
    rows.append((board.pk, world.student_a.pk, student.get_update(before)))
    teacher.apply_update(student.get_update())
    before = teacher.get_state()
    del t_el["s1"]
    t_el["s2"]["x"] = 5
    rows.append((board.pk, world.teacher_a.pk, teacher.get_update(before)))
    page = Doc()
    page.get("body", type=Text).insert(0, "plants need light")
    rows.append((notes.pk, world.student_a.pk, page.get_update()))
    rows.append((board.pk, world.student_a.pk, b"\x00garbage"))  # never stored in practice; skipped if it were
    collab_services.updates_append(rows)
    assert CollabUpdate.objects.count() == 5
    checkpoint = collab_services.document_compact(document_id=board.pk)
    collab_services.document_compact(document_id=notes.pk)
    assert CollabUpdate.objects.count() == 0
    restored = Doc()
    restored.apply_update(bytes(checkpoint.state))
    assert list(restored.get("elements", type=Map).keys()) == ["s2"]
    mine = CollabContribution.objects.get(document=board, user=world.student_a)
    assert (mine.elements_added, mine.elements_removed, mine.updates) == (2, 0, 2)
    theirs = CollabContribution.objects.get(document=board, user=world.teacher_a)
    assert (theirs.elements_removed, theirs.elements_edited) == (1, 1)
    assert CollabContribution.objects.get(document=notes, user=world.student_a).chars_added == 17
    # Twice is the same as once.
    assert collab_services.document_compact(document_id=board.pk).pk == checkpoint.pk
    assert CollabContribution.objects.get(document=board, user=world.student_a).elements_added == 2
    client.force_login(world.teacher_a)
    response = client.get(reverse("session-contributions", args=[world.session_a.pk]))
    assert response.status_code == 200
    assert response.context["students"][0]["board"].elements_added == 2
    assert timezone.now() >= mine.last_at


def test_exports_render_the_board_and_notes_for_participants_and_are_recorded(client, world):
    from pycrdt import Array, Text

    from classrooms.models import CollabUpdate

    docs = collab_services.documents_ensure(world.session_a)
    board = Doc()
    board.get("pages", type=Array).append("p1")
    board.get("elements", type=Map)["s1"] = Map({
        "type": "pen", "page": "p1", "author": world.student_a.pk, "color": "#ff0000", "width": 6,
        "points": Array([100, 100, 800, 100])})
    board.get("elements", type=Map)["n1"] = Map({
        "type": "sticky", "page": "p1", "author": world.student_a.pk, "x": 900, "y": 400, "w": 200, "h": 100,
        "text": Text("<script>x</script> idée")})
    notes = Doc()
    body = notes.get("body", type=Text)
    body.insert(0, "Photosynthesis")
    body.insert(14, "\n", {"header": 2})
    body.insert(15, "needs *light*")
    collab_services.updates_append([(docs["board"].pk, world.student_a.pk, board.get_update()),
                                    (docs["notes"].pk, world.student_a.pk, notes.get_update())])
    assert CollabUpdate.objects.count() == 2
    client.force_login(world.student_a)
    png = client.get(reverse("collab-export", args=[world.session_a.pk, "board", "png"]))
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (1600, 900) and image.getpixel((400, 100))[0] > 200 > image.getpixel((400, 100))[1]
    pdf = client.get(reverse("collab-export", args=[world.session_a.pk, "board", "pdf"]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    md = client.get(reverse("collab-export", args=[world.session_a.pk, "notes", "md"]))
    assert md.content.decode() == "## Photosynthesis\n\nneeds \\*light\\*\n"
    assert client.get(reverse("collab-export", args=[world.session_a.pk, "notes", "pdf"])).content.startswith(b"%PDF")
    assert client.get(reverse("collab-export", args=[world.session_a.pk, "notes", "png"])).status_code == 404
    client.force_login(world.student_c)
    assert client.get(reverse("collab-export", args=[world.session_a.pk, "board", "pdf"])).status_code == 404
    # The export read each writer's work, still in the log: recorded for the student.
    exported = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, additional_data__purpose="collab.export")
    assert {e.additional_data["student"] for e in exported} == {world.student_a.pk}
    # The summary counts the log after the latest checkpoint too, and a page view writes nothing.
    client.force_login(world.teacher_a)
    page = client.get(reverse("session-contributions", args=[world.session_a.pk]))
    row = page.context["students"][0]
    assert row["user"] == world.student_a and row["board"].elements_added == 2 and row["notes"].chars_added == 28
    assert CollabUpdate.objects.count() == 2 and not CollabCheckpoint.objects.exists()


def test_erasing_a_person_removes_what_they_wrote_from_every_version_and_keeps_the_rest(world):
    from pycrdt import Text

    from classrooms.models import CollabClient, CollabUpdate

    docs = collab_services.documents_ensure(world.session_a)
    notes = docs["notes"]
    child, teacher = Doc(), Doc()
    child_body, teacher_body = child.get("body", type=Text), teacher.get("body", type=Text)
    teacher_body.insert(0, "Teacher intro. ")
    teacher_update = teacher.get_update()
    child.apply_update(teacher_update)
    before = child.get_state()
    child_body.insert(len(str(child_body).encode()), "my secret address 12 Elm St")
    child_update = child.get_update(before)
    collab_services.clients_bind(document_id=notes.pk, client_ids=[child.client_id], user_id=world.student_a.pk)
    collab_services.clients_bind(document_id=notes.pk, client_ids=[teacher.client_id], user_id=world.teacher_a.pk)
    collab_services.updates_append([(notes.pk, world.teacher_a.pk, teacher_update)])
    collab_services.document_compact(document_id=notes.pk)
    collab_services.updates_append([(notes.pk, world.student_a.pk, child_update)])
    removed = collab_services.person_content_erase(user_id=world.student_a.pk)
    assert removed["collab_documents"] == 1
    for checkpoint in CollabCheckpoint.objects.filter(document=notes):
        assert b"secret" not in bytes(checkpoint.state)
    assert not CollabUpdate.objects.filter(author=world.student_a).exists()
    assert not CollabContribution.objects.filter(user=world.student_a).exists()
    from classrooms import selectors

    seen = Doc()
    seen.apply_update(selectors.collab_state(notes))
    assert str(seen.get("body", type=Text)) == "Teacher intro. "
    # A live replica that still has the text loses it when the erasure reaches it.
    child.apply_update(CollabUpdate.objects.filter(document=notes, author=None).latest("id").data)
    assert str(child_body) == "Teacher intro. "
    assert CollabClient.objects.filter(user=world.student_a).exists()  # the account itself is not deleted here
    assert collab_services.person_content_erase(user_id=world.student_a.pk) == {"collab_documents": 1}
