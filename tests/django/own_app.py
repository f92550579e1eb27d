"""A project-defined App (Celery style: ``DFCORE["APP"] = "proj.df:app"``)."""

from dfcore import App

app = App("own")
