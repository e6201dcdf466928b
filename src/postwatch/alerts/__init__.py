"""Alerts: events -> alerts -> the responsible people, on a channel that works.

Read docs/alerts.md first. The parts, each small:
``rules`` (which event opens, grows or ends which alert), ``routing`` (who is responsible,
escalation, never through the broken path), ``channels`` (Apprise, masking), ``messages``
(English and Dutch), ``links`` (signed acknowledge links), ``engine`` (the state machine over
the store), ``service`` / ``http`` / ``commands`` / ``checks`` (the plug-in points).
"""
