"""The Django site's URLs, relative to wherever it is mounted (PATH_INFO)."""

from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]

# With DJANGO_DEBUG=1, Django serves the static files itself, from the apps'
# static/ directories. The prefix is "/static/", not settings.STATIC_URL: under
# the mount STATIC_URL is "/django/static/", and patterns are matched against
# the path below the mount. (staticfiles_urlpatterns() uses STATIC_URL and so
# would answer at /django/django/static/.) static() adds nothing when DEBUG is
# off: then main.py mounts microasgi's StaticFiles at /django/static instead.
urlpatterns += static("/static/", view=serve)
