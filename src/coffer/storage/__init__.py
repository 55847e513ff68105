"""Persistence: repository protocols, their SQL implementation and the schema's migrations."""
