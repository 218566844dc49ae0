"""The `gateway` command groups that live in their own module (see gateway.cli)."""
