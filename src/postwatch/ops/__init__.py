"""Operating postwatch: commands for the people who run it (``postwatch backup``).

An edge, like ``cli.py``: it uses the kernel (config, store) and no feature room.
"""
