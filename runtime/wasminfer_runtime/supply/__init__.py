"""Where modules and models come from: OCI registries, and the signatures checked before anything loads."""
