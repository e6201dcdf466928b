"""The delivery watch: mail logs (files, syslog) followed live and turned into events."""
