"""Customer mail: templates, message building, and sending once per event."""
