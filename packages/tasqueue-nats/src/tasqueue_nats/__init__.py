"""tasqueue-nats: NATS JetStream backends for tasqueue (not implemented yet; see README.md)."""

__all__: list[str] = []
