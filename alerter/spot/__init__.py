"""The SPOT API: the client (requests and limits) and the parser (every quirk)."""
