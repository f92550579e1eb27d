"""The client layer: connections per event loop, starting workflows, handles, listings and the
sync bridge. It knows nothing of workers."""
