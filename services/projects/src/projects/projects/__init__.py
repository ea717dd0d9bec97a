"""Projects: a client's unit of work, run through a BMAD workflow by the workflows service."""
