"""Background jobs of the server: automatic rotation and purge after retention."""
