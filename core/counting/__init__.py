"""How tokens are counted and priced: tiktoken, server tokenizers, the calibrated estimate, model
facts.
"""
