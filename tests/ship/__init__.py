"""Tests of what ships: postwatch demo, the Debian package, the container files."""
