"""The SPOT API: the client (requests and limits), the parser and a local simulator."""
