"""Library code the stages call: one module per job, no Click in here."""
