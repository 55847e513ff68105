"""Use cases: one method per API operation, composing domain, crypto, storage, IAM and audit.

The caches of the hot path live here.
"""
