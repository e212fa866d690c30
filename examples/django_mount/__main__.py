"""Django's management commands for the example: ``python -m examples.django_mount migrate``."""

import os
import sys

from django.core.management import execute_from_command_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_mount.settings")
execute_from_command_line([f"{sys.executable} -m examples.django_mount", *sys.argv[1:]])
