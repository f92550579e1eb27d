"""Optional extras that plug into the public API, installed as ``dfcore.contrib``."""
