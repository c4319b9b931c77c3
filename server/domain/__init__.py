"""The pure core: board rules and ordering, increment decisions, deltas, the board's view,
tokens and domain errors. No I/O, no Tornado, no database driver (import-linter checks)."""
