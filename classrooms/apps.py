from django.apps import AppConfig


class ClassroomsConfig(AppConfig):
    name = "classrooms"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from classrooms import receivers, screening  # noqa: F401  (receivers connects signal receivers)

        screening.register()  # class chat and poll text, as the moderation queue sees them

        from classrooms import lti_targets

        lti_targets.register("session", lti_targets.SessionTargets())  # what teachers place in an LMS course
