"""The store port (:mod:`server.store.port`), its pure rules and its adapters."""
