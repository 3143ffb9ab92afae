"""A minimal Django site whose tasks run on Conveyor (tests/test_django.py)."""
