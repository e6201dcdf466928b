"""postwatch: form intake that never loses a lead, and a watch on the mail path behind it."""

__version__ = "0.1.0"
