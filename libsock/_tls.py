"""TLS on a libsock socket: `ssl.SSLContext.wrap_socket` gives an SSLSocket-alike.

OpenSSL's SSLSocket drives a kernel descriptor itself; a libsock socket's
descriptor only mirrors readiness.  So the TLS state machine runs in an
`ssl.SSLObject` over two `ssl.MemoryBIO`s, and this object moves the bytes:
what OpenSSL wants to send goes out with the socket's send, what it wants to
read comes from the socket's recv (honouring the socket's timeout and
non-blocking mode: SSLWantReadError / SSLWantWriteError as CPython's SSLSocket
raises them when the descriptor is non-blocking).  asyncio does the same with
its own SSLObject (sslproto.py) and needs none of this.

`patch()` makes SSLContext.wrap_socket hand libsock sockets here and everything
else to the original (libsock.run.install() calls it).
"""
from __future__ import annotations

import errno
import ssl

_RECV_CHUNK = 1 << 16


class TLSSocket:
    """The part of ssl.SSLSocket that programs use, over a libsock socket."""

    def __init__(self, sock, context: ssl.SSLContext, server_side: bool = False,
                 do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                 server_hostname: str | None = None, session=None):
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if context.check_hostname and not server_side and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._sock = sock
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self.do_handshake_on_connect = do_handshake_on_connect
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side, server_hostname, session)
        self._pending_out = b""         # TLS records OpenSSL made that the socket has not taken yet
        self._io_refs = 0
        self._closing = False
        self._closed = False
        try:
            sock.getpeername()
            connected = True
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            connected = False
        self._connected = connected
        if connected and do_handshake_on_connect:
            timeout = sock.gettimeout()
            if timeout == 0.0:
                raise ValueError("do_handshake_on_connect should not be specified for non-blocking sockets")
            self.do_handshake()

    # -- moving records between OpenSSL and the socket --------------------------------

    def _flush(self) -> None:
        """Send what OpenSSL produced; a non-blocking socket that takes part of it keeps the
        rest for later and says SSLWantWriteError."""
        self._pending_out += self._outgoing.read()
        while self._pending_out:
            try:
                sent = self._sock.send(self._pending_out)
            except BlockingIOError:
                raise ssl.SSLWantWriteError("The operation did not complete (write)") from None
            self._pending_out = self._pending_out[sent:]

    def _fill(self) -> None:
        try:
            data = self._sock.recv(_RECV_CHUNK)
        except BlockingIOError:
            raise ssl.SSLWantReadError("The operation did not complete (read)") from None
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _run(self, operation, *args):
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            except ssl.SSLWantWriteError:
                self._flush()
                continue
            self._flush()
            return result

    # -- ssl.SSLSocket's methods ---------------------------------------------------------

    def do_handshake(self, block: bool = False) -> None:
        self._run(self._sslobj.do_handshake)

    def connect(self, address) -> None:
        self._sock.connect(address)
        self._connected = True
        if self.do_handshake_on_connect:
            self.do_handshake()

    def connect_ex(self, address) -> int:
        err = self._sock.connect_ex(address)
        if not err:
            self._connected = True
            if self.do_handshake_on_connect:
                self.do_handshake()
        return err

    def accept(self):
        conn, address = self._sock.accept()
        return TLSSocket(conn, self.context, True, self.do_handshake_on_connect,
                         self.suppress_ragged_eofs), address

    def read(self, len: int = 1024, buffer=None):
        self._check()
        try:
            if buffer is not None:
                return self._run(self._sslobj.read, len, buffer)
            return self._run(self._sslobj.read, len)
        except ssl.SSLEOFError:
            if self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise
        except ssl.SSLZeroReturnError:
            return 0 if buffer is not None else b""

    def write(self, data) -> int:
        self._check()
        return self._run(self._sslobj.write, data)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TLSSocket")
        return self.read(buflen)

    def recv_into(self, buffer, nbytes: int | None = None, flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TLSSocket")
        nbytes = nbytes or len(buffer)
        return self.read(nbytes, buffer)

    def send(self, data, flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TLSSocket")
        return self.write(data)

    def sendall(self, data, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            sent = self.send(view[:_RECV_CHUNK], flags)
            view = view[sent:]

    def pending(self) -> int:
        return self._sslobj.pending()

    def unwrap(self):
        self._run(self._sslobj.unwrap)
        sock, self._sock = self._sock, None
        return sock

    def getpeercert(self, binary_form: bool = False):
        return self._sslobj.getpeercert(binary_form)

    def cipher(self):
        return self._sslobj.cipher()

    def shared_ciphers(self):
        return self._sslobj.shared_ciphers()

    def compression(self):
        return self._sslobj.compression()

    def version(self):
        return self._sslobj.version()

    def selected_alpn_protocol(self):
        return self._sslobj.selected_alpn_protocol()

    def get_channel_binding(self, cb_type: str = "tls-unique"):
        return self._sslobj.get_channel_binding(cb_type)

    @property
    def session(self):
        return self._sslobj.session

    @property
    def session_reused(self):
        return self._sslobj.session_reused

    def _check(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")

    # -- the socket underneath -----------------------------------------------------------

    def __getattr__(self, name):
        # fileno, settimeout, gettimeout, setblocking, getblocking, getsockname, getpeername,
        # setsockopt, getsockopt, shutdown, family, type, proto ...
        return getattr(self._sock, name)

    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None, newline=None):
        from libsock.socket import socket as _libsock
        return _libsock.makefile(self, mode, buffering, encoding=encoding, errors=errors, newline=newline)

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closing and self._io_refs == 0:
            self._really_close()

    def close(self) -> None:
        if self._io_refs > 0:
            self._closing = True
            return
        self._really_close()

    def _really_close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sock is not None:
                self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<libsock TLSSocket over {self._sock!r}>"


_original_wrap_socket = ssl.SSLContext.wrap_socket


def _wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                 server_hostname=None, session=None):
    from libsock.socket import socket as _libsock
    if isinstance(sock, (_libsock, TLSSocket)):
        return TLSSocket(sock, self, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                         server_hostname, session)
    return _original_wrap_socket(self, sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                 server_hostname, session)


def patch() -> None:
    """SSLContext.wrap_socket takes libsock sockets from now on (kernel ones as before)."""
    ssl.SSLContext.wrap_socket = _wrap_socket

