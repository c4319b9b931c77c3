"""The store port (:mod:`server.store.port`), the change feed, and the SQLite and MongoDB
adapters behind them."""
