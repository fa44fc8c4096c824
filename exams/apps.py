from django.apps import AppConfig


class ExamsConfig(AppConfig):
    name = "exams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from classrooms import lti_targets
        from classrooms.signals import session_ended
        from exams import receivers

        lti_targets.register("exam", receivers.ExamTargets())  # teachers place exams in an LMS course
        session_ended.connect(receivers.session_quiz_grades, dispatch_uid="exams.session_quiz_grades")
