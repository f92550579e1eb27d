import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")

# Celery's settings are the CELERY_* names in Django's settings.
app.config_from_object("django.conf:settings", namespace="CELERY")

# The tasks.py module of every installed app.
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "add-every-2-seconds": {
        "task": "shop.tasks.add",
        "schedule": 2.0,
        "args": (16, 16),
    },
    "weekday-report": {
        "task": "shop.tasks.report",
        "schedule": crontab(hour=7, minute=30, day_of_week="mon-fri"),
    },
}


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
