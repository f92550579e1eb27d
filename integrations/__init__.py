"""Framework integrations (Django, Flask), installed as ``dfcore.integrations``."""
