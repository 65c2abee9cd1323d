"""What the node remembers: jobs, patient and UID mappings, date offsets, and an audit trail."""
