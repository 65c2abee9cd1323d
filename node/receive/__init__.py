"""Receive: the C-STORE/C-ECHO SCP that accepts only what it has made durable."""
