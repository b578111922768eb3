"""RFC 6455 framing without I/O: an incremental frame parser, message assembly, frame encoding.

Frames keep their bytes exactly as they came off the wire (``raw``), so forwarding one untouched
costs a slice, not a re-encode; payloads are unmasked only when a fault needs their content.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OPCODE_NAMES = {OP_CONTINUATION: "continuation", OP_TEXT: "text", OP_BINARY: "binary", OP_CLOSE: "close",
                OP_PING: "ping", OP_PONG: "pong"}
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def unmask(payload: bytes, mask: bytes | None) -> bytes:
    if not mask or not payload:
        return payload
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")


@dataclass(slots=True)
class Frame:
    fin: bool
    opcode: int
    mask: bytes | None
    payload: bytes  # as on the wire (still masked, if masked)
    raw: bytes  # header and payload, exactly as received

    @property
    def is_control(self) -> bool:
        return self.opcode >= OP_CLOSE

    def data(self) -> bytes:
        return unmask(self.payload, self.mask)


def encode_frame(opcode: int, data: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One frame; with ``mask`` (4 bytes) the payload is masked, as a client must."""
    length = len(data)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask:
        return header + mask + unmask(data, mask)
    return header + data


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


def new_mask() -> bytes:
    return os.urandom(4)


class FrameParser:
    """Feed bytes, get whole frames. ``masked`` says what the sender must do (clients mask)."""

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            if first & 0x70:
                raise ProtocolError("reserved bits set, but no extension was negotiated")
            opcode = first & 0x0F
            if opcode not in OPCODE_NAMES:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            fin = bool(first & 0x80)
            is_masked = bool(second & 0x80)
            if is_masked != self.masked:
                raise ProtocolError("client frames must be masked" if self.masked
                                    else "server frames must not be masked")
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = struct.unpack_from("!H", buffer, offset + 2)[0]
                header = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = struct.unpack_from("!Q", buffer, offset + 2)[0]
                if length >> 63:
                    raise ProtocolError("64-bit length with the most significant bit set")
                header = 10
            if opcode >= OP_CLOSE and (length > 125 or not fin):
                raise ProtocolError("control frames must be whole and at most 125 bytes")
            if length > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"frame of {length} bytes is over the proxy's limit", 1009)
            mask_start = offset + header
            payload_start = mask_start + (4 if is_masked else 0)
            end = payload_start + length
            if end > size:
                break
            mask = bytes(buffer[mask_start:payload_start]) if is_masked else None
            frames.append(Frame(fin, opcode, mask, bytes(buffer[payload_start:end]), bytes(buffer[offset:end])))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame that has started but not finished (for 'closed mid-frame')."""
        return len(self._buffer)


@dataclass(slots=True)
class Message:
    """What faults act on: a whole data message (all its fragments) or one control frame."""

    opcode: int
    frames: list[Frame] = field(default_factory=list)
    _objects: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def raw(self) -> bytes:
        return b"".join(f.raw for f in self.frames)

    @property
    def size(self) -> int:
        return sum(len(f.payload) for f in self.frames)

    def data(self) -> bytes:
        return b"".join(f.data() for f in self.frames)

    def objects(self) -> list[dict[str, Any]]:
        """The JSON objects of a text message: the object, or each object of an array (the relay sends
        arrays of messages). Empty for anything else. Parsed once, however many rules ask."""
        if self._objects is None:
            body: Any = None
            if self.opcode == OP_TEXT:
                try:
                    body = json.loads(self.data())
                except ValueError:
                    body = None
            self._objects = [item for item in (body if isinstance(body, list) else [body]) if isinstance(item, dict)]
        return self._objects

    def json_field(self, name: str) -> set[str]:
        """Values of ``name`` in the message's JSON objects."""
        return {str(item[name]) for item in self.objects() if name in item}

    def describe(self) -> dict[str, list[str]]:
        """What a fault log says a message was: its JSON ``type``s and ``action``s, and the payload ids
        (``pid``) of the messages it carries, so a checker can tell which deliveries a fault could have
        hit. Empty lists for anything that is not a JSON text message."""
        pids = []
        for item in self.objects():
            try:
                payload = json.loads(item.get("payload", ""))
            except (TypeError, ValueError):
                continue
            if isinstance(payload, dict) and isinstance(payload.get("pid"), str):
                pids.append(payload["pid"])
        return {"types": sorted(self.json_field("type")), "actions": sorted(self.json_field("action")), "pids": pids}


class MessageAssembler:
    """Groups frames into messages, checking fragmentation rules; control frames pass alone."""

    def __init__(self) -> None:
        self._partial: Message | None = None
        self._partial_size = 0

    def add(self, frame: Frame) -> Message | None:
        if frame.is_control:
            return Message(frame.opcode, [frame])
        if frame.opcode == OP_CONTINUATION:
            if self._partial is None:
                raise ProtocolError("continuation frame without a message to continue")
        elif self._partial is not None:
            raise ProtocolError("new data frame before the fragmented message finished")
        else:
            self._partial = Message(frame.opcode)
            self._partial_size = 0
        self._partial.frames.append(frame)
        self._partial_size += len(frame.payload)
        if self._partial_size > MAX_MESSAGE_BYTES:
            raise ProtocolError("message over the proxy's limit", 1009)
        if not frame.fin:
            return None
        message, self._partial = self._partial, None
        return message
