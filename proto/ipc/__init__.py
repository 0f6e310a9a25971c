"""The messages between netstack's processes: declarations, codec, errno."""
