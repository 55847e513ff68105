"""Coffer's domain: keys, key types, states, identities, formats and permissions.

Pure Python: this package imports the standard library and ``coffer.errors`` only, so that a key
can be built and reasoned about in a plain shell. An import-linter contract keeps it so.
"""
