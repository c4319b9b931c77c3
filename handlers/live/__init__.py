"""The live board over WebSocket: the socket handler, the fan-out and the outboxes."""
