"""Tornado handlers: parse, authenticate, validate, hand a message to an actor, render."""
