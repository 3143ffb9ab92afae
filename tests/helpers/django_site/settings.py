"""Settings of the test site: one app (this package), SQLite, and Conveyor as
the tasks backend. Conveyor's own settings come from `CONVEYOR_*` variables."""

import os

SECRET_KEY = "conveyor-test-site"  # a test site's, guarding nothing
INSTALLED_APPS = ["tests.helpers.django_site"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CONVEYOR_DJANGO_DB", ":memory:"),
    }
}
USE_TZ = True
TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"JOB_OPTIONS": {"max_attempts": 2, "backoff_s": 0.1}},
    }
}
