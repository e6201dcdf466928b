"""Bounce messages: DSN and non-standard bounce parsing, ``classify-bounce``, IMAP watch."""
