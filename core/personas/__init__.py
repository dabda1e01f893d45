"""The Persona model and its files, and import/export in other tools' formats (python -m
core.personas).
"""
