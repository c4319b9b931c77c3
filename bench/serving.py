"""What the benchmark's comparison servers share: listen, then run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

import tornado.web


async def serve_until_stopped(app: tornado.web.Application, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until the process is asked to stop."""
    app.listen(port, host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
