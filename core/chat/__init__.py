"""A conversation and its turns: session, messages and records, context policies, summaries, settings,
what-if replay, prompt caches.
"""
