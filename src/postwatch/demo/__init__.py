"""``postwatch demo``: the gym's incident replayed in accelerated time, with nothing to configure.

An edge like ``cli.py``: it starts real parts on loopback (two SMTP servers, a webhook receiver,
a ``postwatch serve`` subprocess on a generated config and a temporary SQLite store), drives them
through the incident and reports what it measured. It talks to postwatch only through its public
surfaces: the CLI, HTTP and the store's events.
"""
