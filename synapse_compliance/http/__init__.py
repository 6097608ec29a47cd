"""Admin and self-service HTTP resources under `/_synapse/client/compliance/v1/`."""
