"""Sign-in by email or username (case-insensitive), on Django's ModelBackend rules."""

from django.contrib.auth.backends import ModelBackend
from django.db.models import Q

from classrooms.models import User


class EmailOrUsernameBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None or password is None:
            return None
        user = User.objects.filter(Q(email__iexact=username) | Q(username__iexact=username)).first()
        if user is None:
            User().set_password(password)  # same work as a real check: no user-enumeration by timing
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
