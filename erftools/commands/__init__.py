"""One module per ``erftools`` sub-command; each exposes ``register(subparsers)``."""
