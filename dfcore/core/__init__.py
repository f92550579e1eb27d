"""The replay core: history records, the engine, workflow context, definitions, conversion,
codecs, settings and errors. It does no I/O and imports nothing from NATS, so it is tested
with plain lists of records."""
