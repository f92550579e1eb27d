"""Storage on NATS JetStream: connections, the subject layout, streams and consumers, history
appends and reads, outcomes, timers, tasks and dead letters, and the embedded server."""
