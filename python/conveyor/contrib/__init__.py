"""Integrations: `conveyor.contrib.django` (a backend of Django's tasks
framework) and `conveyor.contrib.fastapi` (lifespan and dependency for
FastAPI and Starlette services)."""
