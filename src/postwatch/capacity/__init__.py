"""Capacity watch: mailbox quota (IMAP, doveadm, Maildir), hosting space, history, forecast."""
