"""The backends and their registry: OpenAI-compatible, Anthropic, offline, scripted; which one a
connection uses.
"""
