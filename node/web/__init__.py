"""The administrator's window: status page, quarantine review, dry run and /metrics over HTTP."""
