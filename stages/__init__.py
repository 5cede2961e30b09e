"""One module per pipeline stage: only its logic, records in and records out."""
