"""A real websockets server behind the proxy: it records what arrives and answers on command."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


class Upstream:
    """Echoes each message back, except ``{"push": N}``, answered with N numbered MESSAGE frames.

    ``received`` maps the request path+query to the messages that reached the server, and
    ``closes`` to the close code the server saw.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.received: dict[str, list[Any]] = {}
        self.closes: dict[str, int | None] = {}
        self.port = 0
        ready = threading.Event()

        async def main() -> None:
            server = await serve(self._handle, "127.0.0.1", 0, max_size=None)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Future()

        threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True).start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _handle(self, websocket) -> None:
        key = websocket.request.path
        messages = self.received.setdefault(key, [])
        try:
            async for message in websocket:
                messages.append(message)
                command = _json(message)
                if isinstance(command, dict) and "push" in command:
                    for n in range(command["push"]):
                        await websocket.send(json.dumps([{"type": command.get("type", "MESSAGE"), "n": n}]))
                else:
                    await websocket.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes[key] = websocket.close_code


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
