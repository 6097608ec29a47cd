"""Background work: each job is a plain async method a loop calls and an admin endpoint can trigger."""
