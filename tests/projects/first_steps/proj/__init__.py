# Importing the Celery app with the project makes it the app @shared_task binds to.
from .celery import app as celery_app

__all__ = ("celery_app",)
