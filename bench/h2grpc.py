"""A minimal gRPC client over cleartext HTTP/2 (prior knowledge), standard library only.

Just enough for `nodeagent.v1.Agent/Update`: one connection, one call at a time. Requests use
HPACK literals without indexing (no Huffman), so no encoder state; the answer's headers are
never decoded: a call succeeded when its stream carried a non-empty DATA frame (a gRPC error
is a trailers-only answer), and the benchmark checks the effect in the cgroup file anyway.
"""
import socket, struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
BIG = 1 << 30


def _int(v, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if v < limit:
        return bytes([first | v])
    out = [first | limit]
    v -= limit
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def _lit(name, value):
    n, v = name.encode(), value.encode()
    return b"\x00" + _int(len(n), 7) + n + _int(len(v), 7) + v


def _varint(v):
    out = bytearray()
    while True:
        b = v & 127
        v >>= 7
        if v:
            out.append(b | 128)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wt, payload):
    key = _varint((num << 3) | wt)
    if wt == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def update_request(key, cpu, wait):
    """nodeagent.v1.UpdateRequest{key, patch: ObjectPatch{resources: Resources{cpu}}, wait}."""
    resources = _field(1, 1, struct.pack("<d", cpu))
    patch = _field(1, 2, resources)
    msg = _field(1, 2, key.encode()) + _field(2, 2, patch)
    if wait:
        msg += _field(3, 0, b"\x01")
    return msg


class Client:
    def __init__(self, host, port, authorization):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.authority = f"{host}:{port}"
        self.auth = authorization
        self.next_id = 1
        self.buf = b""
        # Our settings: a large stream window; then a large connection window.
        settings = struct.pack(">HI", 0x4, BIG - 1)
        self.s.sendall(PREFACE + self._frame(SETTINGS, 0, 0, settings)
                       + self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", BIG - 65535)))
        self.received = 0

    @staticmethod
    def _frame(typ, flags, stream, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + struct.pack(">I", stream) + payload

    def _read_frame(self):
        while len(self.buf) < 9:
            self._fill()
        ln = int.from_bytes(self.buf[:3], "big")
        while len(self.buf) < 9 + ln:
            self._fill()
        typ, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = self.buf[9:9 + ln]
        self.buf = self.buf[9 + ln:]
        return typ, flags, stream, payload

    def _fill(self):
        b = self.s.recv(65536)
        if not b:
            raise ConnectionError("gRPC connection closed")
        self.buf += b

    def call(self, path, message):
        sid = self.next_id
        self.next_id += 2
        hdr = (_lit(":method", "POST") + _lit(":scheme", "http") + _lit(":path", path)
               + _lit(":authority", self.authority) + _lit("content-type", "application/grpc")
               + _lit("te", "trailers") + _lit("authorization", self.auth))
        body = b"\x00" + struct.pack(">I", len(message)) + message
        self.s.sendall(self._frame(HEADERS, END_HEADERS, sid, hdr) + self._frame(DATA, END_STREAM, sid, body))
        got = b""
        while True:
            typ, flags, stream, payload = self._read_frame()
            if typ == SETTINGS and not flags & ACK:
                self.s.sendall(self._frame(SETTINGS, ACK, 0, b""))
            elif typ == PING and not flags & ACK:
                self.s.sendall(self._frame(PING, ACK, 0, payload))
            elif typ == GOAWAY:
                raise ConnectionError(f"GOAWAY {payload!r}")
            elif stream == sid:
                if typ == DATA:
                    got += payload
                    self.received += len(payload)
                    if self.received > BIG // 2:  # give the connection window back
                        self.s.sendall(self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
                        self.received = 0
                elif typ == RST:
                    raise RuntimeError(f"stream reset {payload!r}")
                if flags & END_STREAM:
                    if not got:
                        raise RuntimeError(f"gRPC call {path} failed (trailers-only answer)")
                    return got[5:]

    def update(self, key, cpu, wait=True):
        return self.call("/nodeagent.v1.Agent/Update", update_request(key, cpu, wait))

    def close(self):
        self.s.close()
