"""The scoreboard service. Top layer: settings, the composition root (``service``), the
lifecycle owner (``lifecycle``), routes (``app``) and ``python -m server``; below it the
pure core (``domain``), the store (``store``) and shared plumbing (``support``)."""
