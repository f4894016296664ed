"""Scoring mathematics: RDMs, RSA, ridge with closed-form leave-one-out, reliability, bootstrap.

Arrays in, arrays out; this package depends on nothing else of deepmouse
except its exceptions.
"""
