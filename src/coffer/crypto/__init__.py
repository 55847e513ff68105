"""Cryptography: one algorithm object per key type, the key hierarchy and the root of trust.

Every primitive comes from ``cryptography``; nothing here implements a cipher by hand.
"""
