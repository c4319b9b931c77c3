"""Process plumbing of the scoreboard service: settings, app factory, entry point, store, JWT."""
