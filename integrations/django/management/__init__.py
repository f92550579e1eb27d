"""The ``manage.py df`` command and its aliases (``df_worker``, ``df_dev`` ...): see ``..cli``."""
