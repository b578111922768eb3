"""A fake Simple Relay for load-generator benchmarks: answers instantly, so only the client side costs.

Every socket is member 0 of a started session; SEND_MESSAGE comes straight back as MESSAGE and
HEARTBEAT as HEARTBEAT. Run: python benchmarks/fake_relay.py PORT
"""

import asyncio
import contextlib
import json
import sys
import time

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def relay(websocket):
    with contextlib.suppress(ConnectionClosed):  # load generators stop without a closing handshake
        await _serve(websocket)


async def _serve(websocket):
    await websocket.send(json.dumps([{"type": "CONNECTION", "memberId": "m"},
                                     {"type": "SESSION_CONNECT", "sessionType": "bench", "sessionId": "s",
                                      "memberNum": 0, "memberPresence": [True, True]}]))
    async for text in websocket:
        action = json.loads(text)
        if action.get("action") == "SEND_MESSAGE":
            await websocket.send(json.dumps([{"type": "MESSAGE", "payload": action["payload"],
                                              "time": int(time.time() * 1000), "memberNum": 0}]))
        elif action.get("action") == "HEARTBEAT":
            await websocket.send('[{"type":"HEARTBEAT"}]')
        else:
            await websocket.send(text)


async def main(port: int) -> None:
    async with serve(relay, "127.0.0.1", port, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
