"""Compatibility for QC task processes: fixes to qcengine harnesses and a classic ``dftd3``.

Every module here is light (imports nothing else of this project): each QC task starts a fresh
Python, and these run in it.
"""
