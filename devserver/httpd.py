"""The dev server's HTTP layer: one thread per connection (keep-alive, TLS, gzip, CONNECT), the
/api routes handed to the realm (realm.py), /test/ to the control endpoints (control.py), and
the faults those arm carried out on the wire.  Standard library only.
"""

import gzip
import select
import socket
import socketserver
import ssl
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from control import DELIVERY_FAULTS, HTML_502, HTTP_FAULTS, NOT_JSON, TRANSPORT_FAULTS
from realm import (WRITTEN_AT_BYTES, ApiError, Params, Reply, json_reply, rate_limited,
                   stamp_written_at, unauthorized)

GZIP_MIN_BYTES = 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
# A keep-alive connection may sit idle (or a socket operation block) this long.
IDLE_CONNECTION_TIMEOUT = 300
TLS_HANDSHAKE_TIMEOUT = 10

ROUTES = {
    "/api/v1/register": ("POST",),
    "/api/v1/events": ("GET", "DELETE"),
    "/api/v1/messages": ("POST",),
    "/api/v1/users/me": ("GET",),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: the client reuses connections
    server_version = "lua-zulip-devserver"
    sys_version = ""
    timeout = IDLE_CONNECTION_TIMEOUT
    disable_nagle_algorithm = True   # small replies and the byte-wise trickle fault

    def setup(self):
        # TLS is set up here, in the connection's own thread, so a slow or
        # failing handshake never holds up accept().
        context = self.server.tls_context
        if context is not None:
            self.request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            if self.server.tls_context is not None:
                self.request.close()   # the listener only knows the unwrapped socket

    def log_message(self, format, *args):   # noqa: A002 (signature fixed by the base class)
        self.server.realm.log(f"{self.client_address[0]}:{self.client_address[1]} {format % args}")

    def log_request(self, code="-", size="-"):
        pass   # _dispatch logs one line per request itself

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, socket.timeout) as exc:
            self.server.realm.log(f"connection dropped: {exc.__class__.__name__}: {exc}")
            self.close_connection = True

    def do_GET(self):
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_GET

    def do_CONNECT(self):
        """Stands in for a forward proxy's tunnel: whatever host the client names, the tunnel
        leads back to this server, so the requests that follow are served here."""
        realm = self.server.realm
        self.server.control.record_request({"time": time.time(), "method": "CONNECT", "path": self.path, "query": "",
                            "form": {}, "headers": {"User-Agent": self.headers.get("User-Agent"),
                                                    "Authorization": self._auth_scheme("Authorization", "Proxy-Authorization")},
                            "peer_port": self.client_address[1], "content_encoding": None,
                            "status": 200, "fault": None})
        realm.log(f"CONNECT {self.path} -> 200 (a tunnel back to this server)")
        self.send_response(200, "Connection established")
        self.end_headers()

    # -- request plumbing ------------------------------------------------------

    def _auth_scheme(self, *names):
        """The scheme of the first of these credential headers that came ("Basic"), or None:
        the log keeps the scheme only, so credentials never leave the server."""
        for name in names:
            words = (self.headers.get(name) or "").split()
            if words:
                return words[0]
        return None

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537).strip():
                        pass   # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY_BYTES:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _form(self, body):
        """The form body, parsed where Zulip would: never for GET, and otherwise
        only when it is form-urlencoded (multipart is not supported here)."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if self.command == "GET" or ctype != "application/x-www-form-urlencoded" or not body:
            return {}
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _peer_alive(self):
        """True unless the client closed its end (checked without consuming data)."""
        # poll, not select: benchmarks push descriptors past select's 1024 limit.
        poller = select.poll()
        poller.register(self.connection.fileno(), select.POLLIN)
        if not poller.poll(0):
            return True
        try:
            # The socket is readable, so this peek cannot block.  socket.socket.recv
            # reads the raw TCP stream, also under TLS.
            data = socket.socket.recv(self.connection, 1, socket.MSG_PEEK)
        except OSError:
            return False
        return data != b""

    def _dispatch(self):
        realm, control = self.server.realm, self.server.control
        started = time.monotonic()
        url = urlsplit(self.path)
        path, query = url.path, url.query
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(json_reply(400, {"result": "error", "msg": f"Bad request body: {exc}",
                                        "code": "BAD_REQUEST"}))
            return
        if path.startswith("/test/"):
            try:
                reply, after = control.handle(self.command, path, query, body)
            except ApiError as exc:
                reply, after = exc.reply(), None
            self._send(reply)
            if after is not None:
                after()
            return
        form = self._form(body)
        entry = {"time": time.time(), "method": self.command, "path": path, "query": query,
                 "form": form, "headers": {
                     "User-Agent": self.headers.get("User-Agent"),
                     "Accept-Encoding": self.headers.get("Accept-Encoding"),
                     "Authorization": self._auth_scheme("Authorization")},
                 # The client's port on this connection: equal ports mean a reused connection.
                 "peer_port": self.client_address[1],
                 # Set by _send: "gzip" when the reply body went out gzipped.
                 "content_encoding": None}
        reply, fault = self._handle_api(path, query, form)
        entry["status"] = reply.status if reply is not None else None
        entry["fault"] = fault["kind"] if fault is not None else None
        # Recorded before anything is sent, so a client that has its reply
        # always finds the request in /test/stats and /test/requests.
        control.record_request(entry)
        realm.log(f"{self.command} {path} -> {entry['status']}"
                f"{' fault=' + entry['fault'] if entry['fault'] else ''}"
                f" {1000 * (time.monotonic() - started):.1f}ms")
        if reply is not None:
            self._send(reply, fault["kind"] if fault and fault["kind"] in DELIVERY_FAULTS else None,
                       fault, entry)
        elif fault is not None:
            self._transport_fault(fault)
        else:
            self.close_connection = True   # a long-poll whose client went away

    def _handle_api(self, path, query, form):
        """Runs one /api request.  Returns (reply or None, fault or None); the
        reply is None for transport faults and for vanished long-poll clients."""
        realm, control = self.server.realm, self.server.control
        methods = ROUTES.get(path)
        fault = None
        try:
            if methods is None:
                raise ApiError(404, "Not Found")
            if self.command not in methods:
                raise ApiError(405, "Method Not Allowed", code=None,
                               allowed_methods=sorted(methods))
            user = realm.authenticate(self.headers.get("Authorization"))
            values = dict(parse_qsl(query, keep_blank_values=True))
            values.update(form)   # the form body wins, as in Zulip's typed_endpoint
            params = Params(values)
            fault = control.take_fault(path, self.command)
            if fault is not None:
                if fault["kind"] in TRANSPORT_FAULTS:
                    return None, fault
                if fault["kind"] in HTTP_FAULTS:
                    return self._fault_reply(fault), fault
                if fault["kind"] == "delay":
                    realm.stopping.wait(fault.get("seconds", 1.0))
                elif fault["kind"] == "gc" and values.get("queue_id"):
                    realm.gc_queue_now(values["queue_id"])
            rate_headers = realm.check_rate_limit(user)
            if path == "/api/v1/register":
                reply = realm.register(user, params, self._site())
            elif path == "/api/v1/events" and self.command == "GET":
                reply = realm.get_events(user, params, self._peer_alive)
                if reply is None:
                    return None, None
            elif path == "/api/v1/events":
                reply = realm.delete_queue(user, params)
            elif path == "/api/v1/messages":
                reply = realm.send_message_endpoint(user, params)
            else:
                reply = realm.users_me(user, params)
            reply.headers.extend(rate_headers)
        except ApiError as exc:
            reply = exc.reply()
        return reply, fault

    def _site(self):
        scheme = "https" if self.server.tls_context is not None else "http"
        return f"{scheme}://{self.headers.get('Host') or '127.0.0.1'}"

    # -- replies and faults ---------------------------------------------------

    def _send(self, reply, mode=None, fault=None, entry=None):
        """Writes the reply (gzipped when worth it); mode is a delivery fault;
        entry (the request log's) learns the Content-Encoding before anything is sent."""
        body = reply.body
        # CLOCK_MONOTONIC seconds, the clock of the client's zulip.core.now()
        stamp = self.server.realm.config["stamp_written_at"] and WRITTEN_AT_BYTES in body
        headers = [("Content-Type", reply.content_type)] + reply.headers
        if len(body) > GZIP_MIN_BYTES and "gzip" in self.headers.get("Accept-Encoding", "").lower():
            if stamp:
                body, stamp = stamp_written_at(body), False
            body = gzip.compress(body, 6)
            headers.append(("Content-Encoding", "gzip"))
            if entry is not None:
                entry["content_encoding"] = "gzip"
        headers.append(("Vary", "Accept-Encoding"))
        headers.append(("Content-Length", str(len(body))))
        if self.close_connection:
            headers.append(("Connection", "close"))
        reason = self.responses.get(reply.status, ("Unknown",))[0]
        head = f"HTTP/1.1 {reply.status} {reason}\r\nServer: {self.server_version}\r\n" \
               f"Date: {self.date_time_string()}\r\n"
        head = (head + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")
        try:
            if mode == "close_after_headers":
                self.wfile.write(head)
                self.close_connection = True
            elif mode == "truncate":
                self.wfile.write(head + body[:len(body) // 2])
                self.close_connection = True
            elif mode == "close_after_reply":
                # the whole reply, with no "Connection: close", then the connection ends: what
                # a server does when it drops an idle keep-alive connection just after a reply
                self.wfile.write(head + body)
                self.close_connection = True
            elif mode == "reset_after_reply":
                # the whole reply, keep-alive, then the idle connection ends with an RST
                self.wfile.write(head + body)
                self.wfile.flush()
                self.server.realm.stopping.wait(fault.get("seconds", 0.2))
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()   # before socketserver's shutdown, which would send a FIN first
                self.close_connection = True
            elif mode == "trickle":
                data = head + body
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    if self.server.realm.stopping.wait(fault["interval"]):
                        break
            else:
                self.wfile.write(stamp_written_at(head + body) if stamp else head + body)
        except OSError as exc:
            self.server.realm.log(f"could not send reply: {exc.__class__.__name__}: {exc}")
            self.close_connection = True

    def _fault_reply(self, fault):
        kind = fault["kind"]
        if kind == "status500":
            return json_reply(500, {"result": "error", "msg": "Internal server error"})
        if kind == "html502":
            return Reply(502, HTML_502, content_type="text/html")
        if kind == "invalid_json":
            return Reply(200, NOT_JSON)
        if kind == "ratelimit":
            return rate_limited(fault["retry_after"]).reply()
        return unauthorized("Invalid API key").reply()

    def _transport_fault(self, fault):
        kind = fault["kind"]
        realm = self.server.realm
        self.close_connection = True
        if kind == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif kind == "silent":
            # A half-open connection: the request was read, nothing ever comes back.
            realm.stopping.wait(min(fault.get("seconds", 3600.0), realm.remaining_lifetime()))
        else:   # raw: whatever bytes the test wants, then EOF
            try:
                self.wfile.write(fault["data"])
            except OSError as exc:
                realm.log(f"raw fault: could not send: {exc}")


class DevHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024   # benchmarks open ~1,000 long-polls at once
    allow_reuse_address = True

    def __init__(self, address, realm, control, tls_context):
        self.realm = realm
        self.control = control
        self.tls_context = tls_context
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):   # TLS handshake failures, resets: one line
            self.realm.log(f"connection from {client_address[0]}:{client_address[1]} failed: "
                         f"{exc.__class__.__name__}: {exc}")
        else:   # a bug in this server: show it in full
            super().handle_error(request, client_address)


