"""The durable queue: job rows in the database, claimed under a lease by worker processes."""
