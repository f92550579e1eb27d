"""A module named by a Celery app's ``include=`` in a test: importing it is all it does."""

IMPORTED = True
