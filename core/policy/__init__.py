"""What the deployment allows: access mode and who is trusted, allowed base URLs, models, caps and rate
limits.
"""
