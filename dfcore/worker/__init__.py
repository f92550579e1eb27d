"""The worker layer: built from a client and a registry, it serves workflow tasks and activity
tasks of some task queues."""
