"""Tests of `postwatch investigate` and its engine."""

#: the gym's incident as the tests ask about it (mailbox, form sender, syslog year, timezone)
GYM_QUERY = (
    "--mailbox",
    "info@gym.example",
    "--form-sender",
    "wordpress@gym.example",
    "--year",
    "2026",
    "--timezone",
    "Europe/Berlin",
)
