"""The ZeroMQ channel between processes (libsock and the services alike): frames on and off a socket.

Not in proto/, which stays pure (no I/O); not in services/, which libsock must not import."""
