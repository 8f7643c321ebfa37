#!/usr/bin/env python3
"""Zulip-compatible development server for lua-zulip's tests, demo and benchmarks.

It implements the part of Zulip's REST API that a real-time events client
uses -- POST /api/v1/register, GET and DELETE /api/v1/events,
POST /api/v1/messages and GET /api/v1/users/me -- with the behaviour of the
real server at API feature level 330: Basic auth and its 401/400 errors,
strict JSON-typed parameters, per-queue event ids with acknowledgement and
pruning, long-polling with heartbeats, overlapping polls, queue garbage
collection, narrow/event_types filtering and per-user rate limiting.

Unauthenticated /test/ endpoints let test code inject transport and HTTP
faults, push arbitrary events, change timings and inspect state; see
devserver/README.md.

Standard library only.  Every waiting request sleeps on a Condition tied to
the one state lock, so nothing busy-loops.

The code is split by concern: world.py (the realm model and its actions), realm.py (queues
and the API's behaviour),
control.py (the /test/ endpoints and the faults they arm), schedule.py (POST /test/schedule),
httpd.py (HTTP: connections, TLS, gzip, faults on the wire); this file is the command line.
"""

import argparse
import ipaddress
import os
import re
import resource
import ssl
import sys
import threading

from control import Control
from httpd import DevHTTPServer
from realm import BUILTIN_USERS, Realm


def parse_rate_limit(text):
    if text.strip() == "0":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", text)
    if not match or int(match.group(1)) <= 0 or float(match.group(2)) <= 0:
        raise argparse.ArgumentTypeError("expected N/SECS (e.g. 200/60) or 0")
    return (int(match.group(1)), float(match.group(2)))


def positive_float(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv):
    users = "\n".join(f"  {u['email']:<26} {u['api_key']}  {u['full_name']!r} id {u['user_id']}"
                      f"{'' if u['is_active'] else ' (deactivated: every request gets 401)'}"
                      for u in BUILTIN_USERS)
    parser = argparse.ArgumentParser(
        description="Zulip-compatible dev server (real-time events API) for lua-zulip tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"users (email, API key):\n{users}\n"
               "channels: Denmark (id 1: bot, alice), Scotland (id 2: alice), Verona (id 3)\n"
               "control endpoints: see devserver/README.md")
    parser.add_argument("--host", default="127.0.0.1", help="loopback IPv4 address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--plain-port-file",
                        help="with TLS, also serve plain HTTP on another loopback port "
                             "(for test harness control) and write that port here")
    parser.add_argument("--lifetime", type=positive_float, default=3600.0,
                        help="exit after this many seconds (default 3600)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--heartbeat", type=positive_float, default=50.0,
                        help="seconds a long-poll waits before a heartbeat event (default 50)")
    parser.add_argument("--queue-timeout", type=positive_float, default=600.0,
                        help="idle seconds before GC removes a queue (default 600)")
    parser.add_argument("--gc-interval", type=positive_float, default=60.0,
                        help="seconds between GC runs (default 60)")
    parser.add_argument("--rate-limit", type=parse_rate_limit, default=(200, 60.0),
                        help="per-user limit N/SECS (default 200/60; 0 disables)")
    parser.add_argument("--longpoll-timeout-seconds", type=int, default=90,
                        help="event_queue_longpoll_timeout_seconds in register (default 90)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    parser.add_argument("--quiet", action="store_true", help="log nothing")
    args = parser.parse_args(argv)
    try:
        if args.host == "localhost":
            args.host = "127.0.0.1"
        if not (ipaddress.ip_address(args.host).version == 4
                and ipaddress.ip_address(args.host).is_loopback):
            raise ValueError
    except ValueError:
        parser.error(f"--host must be an IPv4 loopback address, not {args.host!r}")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.plain_port_file and not args.tls_cert:
        parser.error("--plain-port-file is only for TLS servers")
    return args


def tls_context(args):
    if not args.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.tls_client_ca)
    return context


def write_port_file(path, port):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)   # readers never see a half-written file


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:   # a zombie is gone too, it just has not been reaped yet
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def main(argv=None):
    args = parse_args(argv)
    # Benchmarks hold ~1,000 long-polls, one thread and descriptor each: keep
    # stacks small and allow as many open files as the hard limit does.
    threading.stack_size(256 * 1024)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    realm = Realm(args)
    control = Control(realm)
    servers = [DevHTTPServer((args.host, args.port), realm, control, tls_context(args))]
    if args.plain_port_file:
        servers.append(DevHTTPServer((args.host, 0), realm, control, None))
    # Scheduled requests go to the plain listener when there is one.
    control.scheduler.base_url = (f"{'https' if servers[-1].tls_context else 'http'}://"
                                  f"{args.host}:{servers[-1].server_port}")
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
    threading.Thread(target=realm.gc_loop, daemon=True).start()
    port_files = [(args.port_file, servers[0]), (args.plain_port_file, servers[-1])]
    for path, server in port_files:
        if path:
            write_port_file(path, server.server_port)
    realm.log(f"listening on {'https' if args.tls_cert else 'http'}://{args.host}:"
            f"{servers[0].server_port} (pid {os.getpid()})")

    reason = "shutdown requested"
    try:
        while not realm.stopping.wait(min(1.0, max(0.01, realm.remaining_lifetime()))):
            if realm.remaining_lifetime() <= 0:
                reason = "lifetime over"
                break
            if args.parent_pid and process_gone(args.parent_pid):
                reason = f"parent {args.parent_pid} is gone"
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    realm.stopping.set()
    realm.gc_kick.set()
    control.scheduler.cancel_all()
    realm.log(f"exiting: {reason}")
    for server in servers:
        server.shutdown()
        server.server_close()
    for path, _server in port_files:
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
