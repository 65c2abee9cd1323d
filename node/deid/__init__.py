"""De-identification: pixels first (while the header still names the patient), then metadata."""
