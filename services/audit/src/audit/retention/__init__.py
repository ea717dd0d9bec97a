"""Month partitions of the log: created ahead of time, dropped whole by retention (recorded in the log)."""
