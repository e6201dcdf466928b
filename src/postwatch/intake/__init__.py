"""Form intake: HTTP endpoint, spam defences, and the durable store of submissions."""
