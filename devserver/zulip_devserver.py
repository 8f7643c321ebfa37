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
"""

import argparse
import base64
import collections
import gzip
import hashlib
import html
import ipaddress
import json
import os
import random
import re
import resource
import select
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ZULIP_VERSION = "11.0-dev+lua-zulip-devserver"
ZULIP_MERGE_BASE = "11.0-dev"
ZULIP_FEATURE_LEVEL = 481
MESSAGE_CLIENT = "lua-zulip-devserver"
REALM_NAME = "lua-zulip dev realm"
MAX_QUEUE_LIFESPAN_SECS = 7 * 24 * 3600
# register's idle_queue_timeout (level 481): seconds, or "mobile"; at most a week
MOBILE_IDLE_QUEUE_TIMEOUT_SECS = 12 * 3600
MAX_IDLE_QUEUE_TIMEOUT_SECS = 7 * 24 * 3600
GZIP_MIN_BYTES = 1024
# With the stamp_written_at config, each event of a GET /events reply carries "_written_at":
# the server's time.monotonic() just before it writes the reply (for the latency benchmark).
# The mark is replaced by a number of the same width (padded with JSON whitespace), so a reply
# that is not gzipped is stamped after its headers are made, right before the write.
WRITTEN_AT_MARK = "@written_at@" + "." * 10
WRITTEN_AT_BYTES = b'"' + WRITTEN_AT_MARK.encode("ascii") + b'"'


def stamp_written_at(data):
    return data.replace(WRITTEN_AT_BYTES, b"%24.6f" % time.monotonic())
MAX_BODY_BYTES = 16 * 1024 * 1024
# A keep-alive connection may sit idle (or a socket operation block) this long.
IDLE_CONNECTION_TIMEOUT = 300
TLS_HANDSHAKE_TIMEOUT = 10
# How often a waiting long-poll checks whether its client went away.
DISCONNECT_CHECK_SECS = 1.0
REQUEST_LOG_SIZE = 500
API_KEY_RE = re.compile(r"[A-Za-z0-9]{32}\Z")

BUILTIN_USERS = (
    {"user_id": 10, "email": "bot@example.com", "full_name": "Echo Bot",
     "api_key": "botkey0123456789ABCDEFGHIJKLMNOP", "is_bot": True, "is_active": True},
    {"user_id": 11, "email": "alice@example.com", "full_name": "Alice",
     "api_key": "alicekey0123456789ABCDEFGHIJKLMN", "is_bot": False, "is_active": True},
    {"user_id": 12, "email": "deactivated@example.com", "full_name": "Deactivated User",
     "api_key": "deadkey0123456789ABCDEFGHIJKLMNO", "is_bot": False, "is_active": False},
)
BUILTIN_CHANNELS = (
    {"stream_id": 1, "name": "Denmark", "subscribers": (10, 11)},
    {"stream_id": 2, "name": "Scotland", "subscribers": (11,)},
    {"stream_id": 3, "name": "Verona", "subscribers": ()},
)

# Parameters each endpoint knows; anything else is reported back in
# ignored_parameters_unsupported like Zulip's typed_endpoint does.
CAPABILITY_PARAMS = (
    "bulk_message_deletion", "stream_typing_notifications", "user_settings_object",
    "pronouns_field_type_supported", "linkifier_url_template", "user_list_incomplete",
    "include_deactivated_groups", "archived_channels",
)
KNOWN_CAPABILITIES = (
    "notification_settings_null", "bulk_message_deletion", "user_avatar_url_field_optional",
    "stream_typing_notifications", "user_settings_object", "linkifier_url_template",
    "user_list_incomplete", "include_deactivated_groups", "archived_channels",
    "empty_topic_name", "simplified_presence_events", "individual_emoji_changes",
)
NARROW_OPERATORS = ("channel", "stream", "topic", "sender", "is")
RESOLVED_TOPIC_PREFIX = "\u2714 "

ROUTES = {
    "/api/v1/register": ("POST",),
    "/api/v1/events": ("GET", "DELETE"),
    "/api/v1/messages": ("POST",),
    "/api/v1/users/me": ("GET",),
}

# Fault kinds that replace the request's handling, leaving server state alone:
# at the TCP level, or with a canned HTTP reply.
TRANSPORT_FAULTS = ("reset", "silent", "raw")
HTTP_FAULTS = ("status500", "html502", "invalid_json", "ratelimit", "unauthorized")
# Fault kinds that do something first, then let the request run normally.
PRE_FAULTS = ("delay", "gc")
# Fault kinds that run the request normally and then mangle the delivery.
DELIVERY_FAULTS = ("close_after_headers", "truncate", "trickle", "close_after_reply")
FAULT_KINDS = TRANSPORT_FAULTS + HTTP_FAULTS + PRE_FAULTS + DELIVERY_FAULTS
DEFAULT_RANDOM_KINDS = ("reset", "status500", "html502", "invalid_json", "ratelimit",
                        "truncate", "close_after_headers")

HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n")
NOT_JSON = b'<!DOCTYPE html>this is not JSON {"result": "success"'


def dump_json(obj):
    """Serialise like orjson does for Zulip: compact, UTF-8, trailing newline."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def gravatar_url(email):
    digest = hashlib.md5(email.lower().encode("utf-8")).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?d=identicon&version=1"


class Reply:
    """An HTTP reply before it is written: status, body bytes and extra headers."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status, body, content_type="application/json", headers=()):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)


def json_reply(status, obj, headers=()):
    return Reply(status, dump_json(obj), headers=headers)


def success(data=None, ignored=()):
    obj = {"result": "success", "msg": ""}
    if data:
        obj.update(data)
    if ignored:
        obj["ignored_parameters_unsupported"] = sorted(ignored)
    return json_reply(200, obj)


class ApiError(Exception):
    """A Zulip JSON error; code=None leaves the code out (as the 405 reply does)."""

    def __init__(self, status, msg, code="BAD_REQUEST", headers=(), **extra):
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.code = code
        self.headers = headers
        self.extra = extra

    def reply(self):
        obj = {"result": "error", "msg": self.msg}
        if self.code is not None:
            obj["code"] = self.code
        obj.update(self.extra)
        return json_reply(self.status, obj, self.headers)


def bad_request(msg, **extra):
    return ApiError(400, msg, **extra)


def unauthorized(msg):
    return ApiError(401, msg, code="UNAUTHORIZED",
                    headers=[("WWW-Authenticate", 'Basic realm="zulip"')])


def rate_limited(retry_after):
    return ApiError(429, "API usage exceeded rate limit", code="RATE_LIMIT_HIT",
                    headers=[("Retry-After", str(retry_after))],
                    **{"retry-after": retry_after})


# ---------------------------------------------------------------------------
# Parameters: Zulip reads each one from the form body, then the query string,
# and parses non-string ones as JSON validated strictly (no coercion).


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")   # Python's json accepts NaN/Infinity; Zulip does not


def check_int(name, value):
    if type(value) is not int:   # bool is an int subclass and 5.0 is a float: both rejected
        raise bad_request(f"{name} is not an integer")
    return value


def check_bool(name, value):
    if type(value) is not bool:
        raise bad_request(f"{name} is not a boolean")
    return value


def check_str_list_or_null(name, value):
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request(f"{name} is not a list")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise bad_request(f"{name}[{i}] is not a string")
    return value


def check_narrow(name, value):
    if not isinstance(value, list):
        raise bad_request(f"{name} is not a list")
    for i, term in enumerate(value):
        if not isinstance(term, list):
            raise bad_request(f"{name}[{i}] is not a list")
        for j, item in enumerate(term):
            if not isinstance(item, str):
                raise bad_request(f"{name}[{i}][{j}] is not a string")
        if len(term) != 2:
            raise bad_request(f"{name}[{i}] is not an [operator, operand] pair")
    # Only these operators can be evaluated against live events.
    for operator, operand in value:
        if operator not in NARROW_OPERATORS:
            raise bad_request(f"Operator {operator} not supported.")
        if operator == "is" and operand == "followed":
            raise bad_request(f"Operand {operand} not supported.")
    return value


def check_subscribers_mode(name, value):
    """include_subscribers (level 412): true, false or "partial"."""
    if type(value) is not bool and value != "partial":
        raise bad_request(f'{name} is not a boolean or "partial"')
    return value


def check_idle_queue_timeout(name, value):
    """idle_queue_timeout (level 481): seconds (1 up to a week), or "mobile" (12 hours)."""
    if value == "mobile":
        return MOBILE_IDLE_QUEUE_TIMEOUT_SECS
    if type(value) is not int:
        raise bad_request(f'{name} is not an integer or "mobile"')
    if not 1 <= value <= MAX_IDLE_QUEUE_TIMEOUT_SECS:
        raise bad_request(f"{name} must be between 1 and {MAX_IDLE_QUEUE_TIMEOUT_SECS} seconds")
    return value


def check_capabilities(name, value):
    if not isinstance(value, dict):
        raise bad_request(f"{name} is not a dict")
    if "notification_settings_null" not in value:
        raise bad_request(f'{name}["notification_settings_null"] field is missing: Field required')
    for key in KNOWN_CAPABILITIES:
        if key in value and type(value[key]) is not bool:
            raise bad_request(f'{name}["{key}"] is not a boolean')
    return value


class Params:
    """The request's parameters; remembers which ones the endpoint asked for."""

    def __init__(self, values):
        self.values = values
        self.used = set()

    def raw(self, name):
        self.used.add(name)
        return self.values.get(name)

    def json(self, name, check, default=None):
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = json.loads(raw, parse_constant=_reject_constant)
        except ValueError:
            raise bad_request(f"{name} is not valid JSON") from None
        return check(name, value)

    def ignored(self):
        return self.values.keys() - self.used


# ---------------------------------------------------------------------------
# Realm data


class Directory:
    """The realm's users and channels.  Immutable; /test/config swaps in a new
    one when it adds synthetic users or channels (for large register replies)."""

    def __init__(self, extra_users=0, extra_channels=0):
        users = [dict(u) for u in BUILTIN_USERS]
        extra_ids = []
        for i in range(1, extra_users + 1):
            extra_ids.append(1000 + i)
            users.append({"user_id": 1000 + i, "email": f"user{i}@example.com",
                          "full_name": f"Synthetic User {i}", "api_key": None,
                          "is_bot": False, "is_active": True})
        channels = [dict(c) for c in BUILTIN_CHANNELS]
        for j in range(1, extra_channels + 1):
            channels.append({"stream_id": 1000 + j, "name": f"Channel {j}",
                             "subscribers": (10, 11, *extra_ids)})
        self.users = users
        self.user_by_id = {u["user_id"]: u for u in users}
        self.user_by_email = {u["email"].lower(): u for u in users}
        self.user_by_key = {u["api_key"]: u for u in users if u["api_key"]}
        self.channels = channels
        self.channel_by_id = {c["stream_id"]: c for c in channels}
        self.channel_by_name = {c["name"].lower(): c for c in channels}

    def user_dict(self, user, client_gravatar):
        d = {
            "user_id": user["user_id"], "email": user["email"], "full_name": user["full_name"],
            "is_bot": user["is_bot"], "is_active": user["is_active"], "is_admin": False,
            "is_owner": False, "is_guest": False, "role": 400,
            "avatar_url": None if client_gravatar else gravatar_url(user["email"]),
            "avatar_version": 1, "timezone": "", "date_joined": "2024-01-01T00:00:00+00:00",
            "delivery_email": None,
        }
        if user["is_bot"]:
            d.update(bot_type=1, bot_owner_id=11)
        else:
            d["profile_data"] = {}
        return d

    def channel_dict(self, channel, include_subscribers):
        d = {
            "stream_id": channel["stream_id"], "name": channel["name"],
            "description": "", "rendered_description": "", "invite_only": False,
            "is_web_public": False, "is_archived": False, "history_public_to_subscribers": True,
            "date_created": 1704067200, "first_message_id": None,
            "message_retention_days": None, "stream_post_policy": 1,
        }
        if include_subscribers == "partial":
            # Zulip sends a partial list for large channels; here always: the bots among them
            d["partial_subscribers"] = [uid for uid in channel["subscribers"]
                                        if self.user_by_id[uid]["is_bot"]]
        elif include_subscribers:
            d["subscribers"] = list(channel["subscribers"])
        return d


# ---------------------------------------------------------------------------
# Event queues


class Waiter:
    """A GET /events request blocked on an empty queue.  Its Condition shares
    the server's lock, so waking one long-poll never wakes the others."""

    __slots__ = ("cond", "events")

    def __init__(self, lock):
        self.cond = threading.Condition(lock)
        self.events = None   # the reply's events once the wait is over

    def finish(self, events):
        self.events = events
        self.cond.notify()


class Queue:
    """One client's event queue (Zulip's ClientDescriptor + EventQueue)."""

    def __init__(self, owner, event_types, narrow, all_public_streams, apply_markdown,
                 client_gravatar, lifespan_secs, idle_timeout_secs=None):
        self.id = str(uuid.uuid4())
        self.owner = owner
        self.event_types = event_types
        self.narrow = narrow
        self.all_public_streams = all_public_streams
        self.apply_markdown = apply_markdown
        self.client_gravatar = client_gravatar
        self.lifespan_secs = lifespan_secs
        self.idle_timeout_secs = idle_timeout_secs   # register's idle_queue_timeout, or None
        self.events = collections.deque()   # pending events, oldest first
        self.next_event_id = 0
        self.newest_pruned_id = -1
        self.last_connection_time = time.monotonic()
        self.waiter = None

    def timeout(self, default_timeout):
        # idle_queue_timeout sets it; queue_lifespan_secs can only lengthen it, up to a week.
        if self.idle_timeout_secs is not None:
            return self.idle_timeout_secs
        if self.lifespan_secs > 0:
            return max(default_timeout, min(self.lifespan_secs, MAX_QUEUE_LIFESPAN_SECS))
        return default_timeout

    def prune(self, through_id):
        while self.events and self.events[0]["id"] <= through_id:
            self.newest_pruned_id = self.events.popleft()["id"]

    def accepts(self, event):
        etype = event.get("type")
        if self.event_types is not None:
            if etype not in self.event_types:
                return False
            if etype == "muted_topics" and "user_topic" in self.event_types:
                return False
        if etype == "message" and self.narrow:
            return narrow_matches(self.narrow, event.get("message") or {}, event.get("flags") or [])
        return True

    def describe(self):
        return {"id": self.id, "owner": self.owner["email"], "event_types": self.event_types,
                "narrow": self.narrow, "all_public_streams": self.all_public_streams,
                "idle_queue_timeout": self.idle_timeout_secs,
                "newest_pruned_id": self.newest_pruned_id, "pending": len(self.events),
                "next_event_id": self.next_event_id, "waiting": self.waiter is not None}


def narrow_matches(narrow, message, flags):
    """Zulip's narrow predicate for events: terms ANDed, case-insensitive."""
    is_stream = message.get("type") == "stream"
    topic = str(message.get("subject", ""))
    for operator, operand in narrow:
        operand = operand.lower()
        if operator in ("channel", "stream"):
            if not is_stream or str(message.get("display_recipient", "")).lower() != operand:
                return False
        elif operator == "topic":
            if not is_stream or topic.lower() != operand:
                return False
        elif operator == "sender":
            if str(message.get("sender_email", "")).lower() != operand:
                return False
        elif operator == "is":
            if operand in ("dm", "private") and message.get("type") != "private":
                return False
            if operand == "starred" and "starred" not in flags:
                return False
            if operand == "unread" and "read" in flags:
                return False
            if operand in ("mentioned", "alerted") and "mentioned" not in flags:
                return False
            if operand == "resolved" and not topic.startswith(RESOLVED_TOPIC_PREFIX):
                return False
    return True


# ---------------------------------------------------------------------------
# Server state and endpoint logic


class DevServer:
    """All state, behind one lock."""

    def __init__(self, args):
        self.quiet = args.quiet
        self.started = time.monotonic()
        self.lifetime = args.lifetime
        self.defaults = {
            "heartbeat": args.heartbeat,
            "rate_limit": args.rate_limit,
            "queue_timeout": args.queue_timeout,
            "gc_interval": args.gc_interval,
            "longpoll_timeout_seconds": args.longpoll_timeout_seconds,
            "extra_users": 0,
            "extra_channels": 0,
            "register_initial_events": False,
            "stamp_written_at": False,
        }
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.gc_kick = threading.Event()
        self.log_lock = threading.Lock()
        self.next_message_id = 1   # message ids stay unique across /test/reset
        self.next_fault_id = 1
        self.queues = {}
        self._reset_locked()

    # -- housekeeping -------------------------------------------------------

    def log(self, text):
        if not self.quiet:
            with self.log_lock:
                sys.stderr.write(f"[devserver {time.strftime('%H:%M:%S')}] {text}\n")
                sys.stderr.flush()

    def remaining_lifetime(self):
        return max(0.0, self.lifetime - (time.monotonic() - self.started))

    def _reset_locked(self):
        for queue in list(self.queues.values()):
            self._remove_queue_locked(queue)
        self.config = dict(self.defaults)
        self.directory = Directory()
        self.faults = []
        self.random_faults = None
        self.request_counts = collections.Counter()
        self.request_log = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self.rate_buckets = {}
        self.dm_recipient_ids = {}

    def gc_loop(self):
        """Zulip's periodic gc_event_queues: drop idle queues nobody waits on."""
        while not self.stopping.is_set():
            self.gc_kick.wait(self.config["gc_interval"])
            self.gc_kick.clear()
            now = time.monotonic()
            with self.lock:
                timeout = self.config["queue_timeout"]
                for queue in list(self.queues.values()):
                    if queue.waiter is None and now - queue.last_connection_time >= queue.timeout(timeout):
                        self._remove_queue_locked(queue)
                        self.log(f"gc: collected queue {queue.id}")

    # -- queues (lock held) ---------------------------------------------------

    def _finish_waiter_locked(self, queue):
        """End a waiting GET with HTTP 200 and the queue's current contents."""
        waiter, queue.waiter = queue.waiter, None
        if waiter is not None:
            waiter.finish(list(queue.events))
            return True
        return False

    def _remove_queue_locked(self, queue):
        self._finish_waiter_locked(queue)
        self.queues.pop(queue.id, None)

    def _push_locked(self, queue, events):
        """Append events (ids assigned here) and wake the queue's waiter once."""
        for event in events:
            event = dict(event)
            event["id"] = queue.next_event_id
            queue.next_event_id += 1
            queue.events.append(event)
        if events:
            self._finish_waiter_locked(queue)

    def _access_queue_locked(self, queue_id, user):
        queue = self.queues.get(queue_id)
        if queue is None or queue.owner["user_id"] != user["user_id"]:
            raise bad_request(f"Bad event queue ID: {queue_id}", code="BAD_EVENT_QUEUE_ID",
                              queue_id=queue_id)
        return queue

    def _new_queue_locked(self, user, **options):
        queue = Queue(user, **options)
        self.queues[queue.id] = queue
        return queue

    # -- auth and rate limits -------------------------------------------------

    def authenticate(self, header):
        """Zulip's Basic auth (decorator.py): every failure is 401 UNAUTHORIZED,
        except a non-Basic scheme, which is a plain 400."""
        if header is None:
            raise unauthorized("Not logged in: API authentication or user session required")
        try:
            scheme, credentials = header.split()
            if scheme.lower() != "basic":
                raise bad_request("This endpoint requires HTTP basic authentication.")
            email, api_key = base64.b64decode(credentials).decode("utf-8").split(":")
        except ValueError:   # includes binascii.Error and UnicodeDecodeError
            raise unauthorized("Invalid authorization header for basic auth") from None
        email, api_key = email.strip(), api_key.strip()
        if not API_KEY_RE.match(api_key):
            raise unauthorized("Malformed API key")
        user = self.directory.user_by_key.get(api_key)
        if user is None or user["email"].lower() != email.lower():
            raise unauthorized("Invalid API key")
        if not user["is_active"]:
            raise unauthorized("Account is deactivated")
        return user

    def check_rate_limit(self, user):
        """Sliding window per user; returns X-RateLimit-* headers or raises 429."""
        with self.lock:
            limit = self.config["rate_limit"]
            if limit is None:
                return []
            max_requests, window = limit
            now = time.time()
            bucket = self.rate_buckets.setdefault(user["user_id"], collections.deque())
            while bucket and bucket[0] <= now - window:
                bucket.popleft()
            if len(bucket) >= max_requests:
                raise rate_limited(max(0.001, bucket[0] + window - now))
            bucket.append(now)
            return [("X-RateLimit-Limit", str(max_requests)),
                    ("X-RateLimit-Remaining", str(max_requests - len(bucket))),
                    ("X-RateLimit-Reset", str(int(bucket[0] + window)))]

    # -- faults ----------------------------------------------------------------

    def take_fault(self, path, method):
        with self.lock:
            for fault in self.faults:
                if (fault["path"] in (None, path)) and fault["method"] in (None, method):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.faults.remove(fault)
                    return fault
            rnd = self.random_faults
            if rnd and (not rnd["paths"] or path in rnd["paths"]) \
                    and rnd["rng"].random() < rnd["probability"]:
                return dict(rnd["params"], kind=rnd["rng"].choice(rnd["kinds"]))
        return None

    def gc_queue_now(self, queue_id):
        with self.lock:
            queue = self.queues.get(queue_id)
            if queue is not None:
                self._remove_queue_locked(queue)
            return queue is not None

    # -- POST /api/v1/register ------------------------------------------------

    def register(self, user, params, site):
        apply_markdown = params.json("apply_markdown", check_bool, False)
        client_gravatar = params.json("client_gravatar", check_bool, True)
        include_subscribers = params.json("include_subscribers", check_subscribers_mode, False)
        params.json("slim_presence", check_bool)
        params.json("presence_history_limit_days", check_int)
        all_public_streams = params.json("all_public_streams", check_bool, False)
        params.json("client_capabilities", check_capabilities)
        event_types = params.json("event_types", check_str_list_or_null)
        fetch_event_types = params.json("fetch_event_types", check_str_list_or_null)
        narrow = params.json("narrow", check_narrow, [])
        lifespan = params.json("queue_lifespan_secs", check_int, 0)
        idle_timeout = params.json("idle_queue_timeout", check_idle_queue_timeout)

        # The queue and the state snapshot are made under one lock, so any
        # event pushed later is in the queue and not in the snapshot.
        with self.lock:
            queue = self._new_queue_locked(
                user, event_types=event_types, narrow=narrow,
                all_public_streams=all_public_streams, apply_markdown=apply_markdown,
                client_gravatar=client_gravatar, lifespan_secs=lifespan,
                idle_timeout_secs=idle_timeout)
            last_event_id = -1
            if self.config["register_initial_events"]:
                # Stands for an event that arrived while the state was fetched:
                # it stays queued and register's last_event_id points at it.
                self._push_locked(queue, [{"type": "heartbeat"}])
                last_event_id = queue.next_event_id - 1
            max_message_id = self.next_message_id - 1 if self.next_message_id > 1 else -1
            idle_timeout_secs = queue.timeout(self.config["queue_timeout"])
            directory = self.directory
            longpoll_timeout = self.config["longpoll_timeout_seconds"]

        wanted = fetch_event_types if fetch_event_types is not None else event_types
        state = {"queue_id": queue.id, "zulip_version": ZULIP_VERSION,
                 "zulip_feature_level": ZULIP_FEATURE_LEVEL,
                 "zulip_merge_base": ZULIP_MERGE_BASE, "last_event_id": last_event_id,
                 "idle_queue_timeout_secs": int(idle_timeout_secs)}

        def want(event_type):
            return wanted is None or event_type in wanted

        if want("realm"):
            if longpoll_timeout is not None:
                state["event_queue_longpoll_timeout_seconds"] = longpoll_timeout
            state.update(realm_name=REALM_NAME, realm_description="", realm_url=site,
                         realm_uri=site, max_message_length=10000, max_topic_length=60,
                         max_stream_name_length=60)
        if want("message"):
            state["max_message_id"] = max_message_id
        if want("realm_user"):
            state["realm_users"] = [directory.user_dict(u, client_gravatar)
                                    for u in directory.users if u["is_active"]]
            state["realm_non_active_users"] = [directory.user_dict(u, client_gravatar)
                                               for u in directory.users if not u["is_active"]]
        if want("subscription"):
            uid = user["user_id"]
            state["subscriptions"] = [
                dict(directory.channel_dict(c, include_subscribers), color="#76ce90",
                     is_muted=False, pin_to_top=False, desktop_notifications=None,
                     audible_notifications=None, push_notifications=None,
                     email_notifications=None, wildcard_mentions_notify=None)
                for c in directory.channels if uid in c["subscribers"]]
            state["unsubscribed"] = []
            state["never_subscribed"] = [directory.channel_dict(c, include_subscribers)
                                         for c in directory.channels
                                         if uid not in c["subscribers"]]
        if want("stream"):
            state["streams"] = [directory.channel_dict(c, False) for c in directory.channels]
        return success(state, params.ignored())

    # -- GET /api/v1/events -----------------------------------------------------

    def get_events(self, user, params, peer_alive):
        queue_id = params.raw("queue_id")
        last_event_id = params.json("last_event_id", check_int)
        dont_block = params.json("dont_block", check_bool, False)
        # Only used when this request creates the queue (dont_block without queue_id).
        options = {
            "apply_markdown": params.json("apply_markdown", check_bool, False),
            "client_gravatar": params.json("client_gravatar", check_bool, False),
            "all_public_streams": params.json("all_public_streams", check_bool, False),
            "event_types": params.json("event_types", check_str_list_or_null),
            "narrow": params.json("narrow", check_narrow, []),
            "lifespan_secs": params.json("lifespan_secs", check_int, 0),
        }
        params.json("slim_presence", check_bool)
        for name in CAPABILITY_PARAMS:
            params.json(name, check_bool)
        params.raw("user_client")

        with self.lock:
            if queue_id is None:
                if not dont_block:
                    raise bad_request("Missing 'queue_id' argument")
                queue = self._new_queue_locked(user, **options)
                return success({"events": [], "queue_id": queue.id}, params.ignored())
            if last_event_id is None:
                raise bad_request("Missing 'last_event_id' argument")
            queue = self._access_queue_locked(queue_id, user)
            if last_event_id < queue.newest_pruned_id:
                raise bad_request(f"An event newer than {queue.newest_pruned_id} "
                                  "has already been pruned!")
            queue.prune(last_event_id)
            if queue.newest_pruned_id != last_event_id:
                raise bad_request(f"Event {last_event_id} was not in this queue")
            # A newer poll ends the older one with 200 and the current contents.
            if self._finish_waiter_locked(queue):
                self.log(f"queue {queue.id}: overlapping poll ended the older one")
            immediate = bool(queue.events) or dont_block
            events = list(queue.events) if immediate else self._wait_locked(queue, peer_alive)
        if events is not None and self.config["stamp_written_at"]:
            # Benchmarks: _send replaces the mark with the time it writes the reply.
            events = [dict(e, _written_at=WRITTEN_AT_MARK) for e in events]
        if immediate:
            return success({"events": events}, params.ignored())
        if events is None:
            return None   # the client went away; nothing to send
        # Long-poll replies carry queue_id but never ignored_parameters_unsupported.
        return success({"events": events, "queue_id": queue.id})

    def _wait_locked(self, queue, peer_alive):
        """Long-poll: block until an event, a newer poll, DELETE or GC ends the
        wait, pushing a heartbeat when the heartbeat interval passes first."""
        waiter = Waiter(self.lock)
        queue.waiter = waiter
        queue.last_connection_time = time.monotonic()
        deadline = queue.last_connection_time + self.config["heartbeat"]
        while waiter.events is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Heartbeats bypass the event_types filter, like Zulip's add_event.
                self._push_locked(queue, [{"type": "heartbeat"}])
                break
            waiter.cond.wait(min(remaining, DISCONNECT_CHECK_SECS))
            if waiter.events is None and not peer_alive():
                if queue.waiter is waiter:
                    queue.waiter = None
                self.log(f"queue {queue.id}: client disconnected while waiting")
                return None
        return waiter.events

    # -- DELETE /api/v1/events --------------------------------------------------

    def delete_queue(self, user, params):
        queue_id = params.raw("queue_id")
        if queue_id is None:
            raise bad_request("Missing 'queue_id' argument", code="REQUEST_VARIABLE_MISSING",
                              var_name="queue_id")
        with self.lock:
            self._remove_queue_locked(self._access_queue_locked(queue_id, user))
        return success(None, params.ignored())

    # -- POST /api/v1/messages --------------------------------------------------

    def send_message_endpoint(self, user, params):
        msg_type = params.raw("type")
        to = params.raw("to")
        topic = params.raw("topic")
        subject = params.raw("subject")
        content = params.raw("content")
        sender_queue_id = params.raw("queue_id")
        local_id = params.raw("local_id")
        params.json("read_by_sender", check_bool)
        if msg_type is None:
            raise bad_request("Missing 'type' argument", code="REQUEST_VARIABLE_MISSING",
                              var_name="type")
        if content is None:
            raise bad_request("Missing 'content' argument", code="REQUEST_VARIABLE_MISSING",
                              var_name="content")
        if to is None:
            raise bad_request("Missing 'to' argument", code="REQUEST_VARIABLE_MISSING",
                              var_name="to")
        message_id = self.send_message(user, msg_type, to, topic if topic is not None else subject,
                                       content, sender_queue_id, local_id)
        return success({"id": message_id}, params.ignored())

    def _resolve_recipients(self, directory, msg_type, to):
        """Returns (channel, None) or (None, participants) for the raw 'to' value."""
        try:
            parsed = json.loads(to)
        except ValueError:
            parsed = to
        if msg_type in ("stream", "channel"):
            if isinstance(parsed, list) and len(parsed) == 1:
                parsed = parsed[0]
            if type(parsed) is int:
                channel = directory.channel_by_id.get(parsed)
                if channel is None:
                    raise bad_request(f"Channel with ID '{parsed}' does not exist",
                                      code="STREAM_DOES_NOT_EXIST")
                return channel, None
            name = parsed if isinstance(parsed, str) else to
            channel = directory.channel_by_name.get(name.strip().lower())
            if channel is None:
                raise bad_request(f"Channel '{name}' does not exist",
                                  code="STREAM_DOES_NOT_EXIST", stream=name)
            return channel, None
        if msg_type in ("private", "direct"):
            if isinstance(parsed, str):
                parsed = [e for e in parsed.split(",") if e.strip()]
            elif not isinstance(parsed, list):
                parsed = [parsed]
            users = []
            for item in parsed:
                found = (directory.user_by_id.get(item) if type(item) is int
                         else directory.user_by_email.get(str(item).strip().lower()))
                if found is None or not found["is_active"]:
                    raise bad_request(f"Invalid email '{item}'")
                users.append(found)
            if not users:
                raise bad_request("Message must have recipients")
            return None, users
        raise bad_request("Invalid message type")

    def send_message(self, sender, msg_type, to, topic, content, sender_queue_id=None,
                     local_id=None):
        """Store nothing, just fan a message event out to every queue that
        should see it (Zulip's process_message_event).  Returns the id."""
        if not content.strip():
            raise bad_request("Message must not be empty")
        with self.lock:
            channel, dm_users = self._resolve_recipients(self.directory, msg_type, to)
            if channel is not None:
                if topic is None:
                    raise bad_request("Missing topic")
                topic = topic.strip()
                if not topic:
                    raise bad_request("Topic can't be empty!")
            message_id = self.next_message_id
            self.next_message_id += 1
            message = {
                "id": message_id, "sender_id": sender["user_id"],
                "sender_email": sender["email"], "sender_full_name": sender["full_name"],
                "sender_realm_str": "zulip", "timestamp": int(time.time()),
                "client": MESSAGE_CLIENT, "topic_links": [],
                "is_me_message": content.startswith("/me "), "reactions": [], "submessages": [],
            }
            if channel is not None:
                recipients = set(channel["subscribers"]) | {sender["user_id"]}
                message.update(type="stream", display_recipient=channel["name"],
                               stream_id=channel["stream_id"], subject=topic,
                               recipient_id=100 + channel["stream_id"])
            else:
                participants = {u["user_id"]: u for u in dm_users}
                participants[sender["user_id"]] = sender
                recipients = set(participants)
                key = frozenset(recipients)
                recipient_id = self.dm_recipient_ids.setdefault(
                    key, 10000 + len(self.dm_recipient_ids))
                message.update(type="private", subject="", recipient_id=recipient_id,
                               display_recipient=[
                                   {"id": u["user_id"], "email": u["email"],
                                    "full_name": u["full_name"], "is_mirror_dummy": False}
                                   for _, u in sorted(participants.items())])
            mentioned = {u["user_id"] for u in self.directory.users
                         if f"@**{u['full_name']}**" in content} if "@**" in content else set()
            rendered = {True: ("<p>" + html.escape(content, quote=False) + "</p>", "text/html"),
                        False: (content, "text/x-markdown")}
            avatar = gravatar_url(sender["email"])
            for queue in list(self.queues.values()):
                owner_id = queue.owner["user_id"]
                if owner_id in recipients:
                    flags = []
                    if owner_id == sender["user_id"]:
                        flags.append("read")
                    if owner_id in mentioned:
                        flags.append("mentioned")
                elif channel is not None and (queue.all_public_streams or queue.narrow):
                    # Zulip registers narrowed queues like all_public_streams
                    # ones, so they see matching public-channel traffic.
                    flags = []
                else:
                    continue
                body, content_type = rendered[queue.apply_markdown]
                event = {"type": "message", "flags": flags,
                         "message": dict(message, content=body, content_type=content_type,
                                         avatar_url=None if queue.client_gravatar else avatar)}
                if not queue.accepts(event):
                    continue
                if local_id is not None and queue.id == sender_queue_id \
                        and owner_id == sender["user_id"]:
                    event["local_message_id"] = local_id
                self._push_locked(queue, [event])
        return message_id

    # -- /test/ control endpoints -------------------------------------------------

    def control(self, method, path, query, body):
        """Returns (Reply, action to run after the reply was sent or None)."""
        handler = CONTROL_ROUTES.get(path)
        if handler is None:
            raise ApiError(404, f"Unknown control endpoint {path}")
        want_method = "GET" if path in ("/test/stats", "/test/requests", "/test/queues") else "POST"
        if method != want_method:
            raise ApiError(405, "Method Not Allowed", code=None, allowed_methods=[want_method])
        if method == "POST":
            try:
                data = json.loads(body.decode("utf-8")) if body.strip() else {}
            except ValueError:
                raise bad_request("control body is not valid JSON") from None
            if not isinstance(data, dict):
                raise bad_request("control body must be a JSON object")
        else:
            data = dict(parse_qsl(query))
        try:
            return handler(self, data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise bad_request(f"bad control request: {exc}") from None

    def ctl_shutdown(self, _data):
        return success({"shutting_down": True}), self.stopping.set

    def ctl_reset(self, _data):
        with self.lock:
            self._reset_locked()
        self.gc_kick.set()
        return success(), None

    def ctl_config(self, data):
        with self.lock:
            config = dict(self.config)
            for key, value in data.items():
                if key not in config:
                    raise bad_request(f"unknown config key {key}")
                config[key] = validate_config(key, value)
            self.config = config
            if "extra_users" in data or "extra_channels" in data:
                self.directory = Directory(config["extra_users"], config["extra_channels"])
        self.gc_kick.set()   # a new gc_interval takes effect now, not after the old one
        return success({"config": config}), None

    def ctl_fault(self, data):
        fault = parse_fault(data)
        count = data.get("count", 1)
        if type(count) is not int or count < 1:
            raise bad_request("count must be a positive integer")
        with self.lock:
            fault.update(id=self.next_fault_id, count=count, path=data.get("path"),
                         method=data.get("method"))
            self.next_fault_id += 1
            self.faults.append(fault)
        return success({"fault_id": fault["id"]}), None

    def ctl_random_faults(self, data):
        probability = data.get("probability", 0)
        if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise bad_request("probability must be a number in [0, 1]")
        kinds = data.get("kinds") or list(DEFAULT_RANDOM_KINDS)
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise bad_request(f"unknown fault kind {kind}")
        params = parse_fault(dict(data, kind=kinds[0]))
        params.pop("kind")
        setting = None
        if probability > 0:
            setting = {"probability": probability, "kinds": kinds, "params": params,
                       "paths": data.get("paths") or [], "rng": random.Random(data.get("seed"))}
        with self.lock:
            self.random_faults = setting
        return success(), None

    def ctl_gc_queue(self, data):
        if data.get("all"):
            with self.lock:
                removed = list(self.queues)
                for queue in list(self.queues.values()):
                    self._remove_queue_locked(queue)
            return success({"removed": removed}), None
        queue_id = data.get("queue_id")
        if not isinstance(queue_id, str):
            raise bad_request("queue_id (string) or all=true required")
        return success({"removed": [queue_id] if self.gc_queue_now(queue_id) else []}), None

    def ctl_event(self, data):
        events = data.get("events")
        if events is None:
            events = [data.get("event")]
        if not events or not all(isinstance(e, dict) for e in events):
            raise bad_request("event (object) or events (list of objects) required")
        with self.lock:
            if "queue_id" in data:
                # Straight into one queue, unfiltered: for edge-case payloads.
                queue = self.queues.get(data["queue_id"])
                if queue is None:
                    raise bad_request(f"no queue {data['queue_id']}")
                targets = [(queue, events)]
            else:
                email = str(data.get("user", "")).lower()
                targets = [(q, [e for e in events if q.accepts(e)]) for q in self.queues.values()
                           if not email or q.owner["email"].lower() == email]
            for queue, accepted in targets:
                self._push_locked(queue, accepted)
            queue_ids = [q.id for q, accepted in targets if accepted]
        return success({"queues": queue_ids}), None

    def ctl_messages(self, data):
        count = data.get("count", 1)
        if type(count) is not int or count < 0:
            raise bad_request("count must be a non-negative integer")
        sender = self.directory.user_by_email.get(str(data.get("sender", "alice@example.com")).lower())
        if sender is None:
            raise bad_request("unknown sender")
        to = data.get("to", "Denmark")
        msg_type = data.get("type", "private" if isinstance(to, list) else "stream")
        to_raw = json.dumps(to) if isinstance(to, list) else str(to)
        prefix = str(data.get("content_prefix", "m"))
        topic = str(data.get("topic", "t"))
        ids = [self.send_message(sender, msg_type, to_raw, topic, f"{prefix}{i}")
               for i in range(1, count + 1)]
        return success({"count": count, "first_id": ids[0] if ids else None,
                        "last_id": ids[-1] if ids else None}), None

    def ctl_stats(self, _data):
        with self.lock:
            return success({
                "queues": len(self.queues), "requests": dict(self.request_counts),
                "faults_pending": sum(f["count"] for f in self.faults),
                "longpolls_waiting": sum(1 for q in self.queues.values() if q.waiter),
                "config": dict(self.config),
            }), None

    def ctl_requests(self, data):
        try:
            n = int(data.get("n", 20))
        except ValueError:
            raise bad_request("n must be an integer") from None
        with self.lock:
            entries = list(self.request_log)[-n:] if n > 0 else []
        return success({"requests": entries}), None

    def ctl_queues(self, _data):
        with self.lock:
            return success({"queues": [q.describe() for q in self.queues.values()]}), None

    def record_request(self, entry):
        with self.lock:
            self.request_counts[entry["path"]] += 1
            self.request_log.append(entry)


CONTROL_ROUTES = {
    "/test/shutdown": DevServer.ctl_shutdown,
    "/test/reset": DevServer.ctl_reset,
    "/test/config": DevServer.ctl_config,
    "/test/fault": DevServer.ctl_fault,
    "/test/random_faults": DevServer.ctl_random_faults,
    "/test/gc_queue": DevServer.ctl_gc_queue,
    "/test/event": DevServer.ctl_event,
    "/test/messages": DevServer.ctl_messages,
    "/test/stats": DevServer.ctl_stats,
    "/test/requests": DevServer.ctl_requests,
    "/test/queues": DevServer.ctl_queues,
}


def _positive_number(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise bad_request(f"{key} must be a positive number")
    return value


def _count(key, value):
    if type(value) is not int or value < 0:
        raise bad_request(f"{key} must be a non-negative integer")
    return value


def validate_config(key, value):
    if key in ("heartbeat", "queue_timeout", "gc_interval"):
        return float(_positive_number(key, value))
    if key == "rate_limit":
        if value is None:
            return None
        if not (isinstance(value, list) and len(value) == 2):
            raise bad_request("rate_limit must be [requests, seconds] or null")
        return (int(_positive_number(key, value[0])), float(_positive_number(key, value[1])))
    if key == "longpoll_timeout_seconds":
        return None if value is None else _count(key, value)
    if key in ("extra_users", "extra_channels"):
        return _count(key, value)
    if type(value) is not bool:   # register_initial_events, stamp_written_at
        raise bad_request(f"{key} must be a boolean")
    return value


def parse_fault(data):
    """Validates a fault description; returns kind plus its parameters."""
    kind = data.get("kind")
    if kind not in FAULT_KINDS:
        raise bad_request(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    fault = {"kind": kind, "interval": 0.2, "retry_after": 0.5}
    for key in ("interval", "seconds", "retry_after"):
        if key in data:
            fault[key] = float(_positive_number(key, data[key]))
    if kind == "raw":
        if isinstance(data.get("data_b64"), str):
            try:
                fault["data"] = base64.b64decode(data["data_b64"], validate=True)
            except ValueError:
                raise bad_request("data_b64 is not valid base64") from None
        elif isinstance(data.get("data"), str):
            fault["data"] = data["data"].encode("utf-8")
        else:
            raise bad_request("raw fault needs data (string) or data_b64")
    return fault


# ---------------------------------------------------------------------------
# HTTP layer


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
        self.server.app.log(f"{self.client_address[0]}:{self.client_address[1]} {format % args}")

    def log_request(self, code="-", size="-"):
        pass   # _dispatch logs one line per request itself

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, socket.timeout) as exc:
            self.server.app.log(f"connection dropped: {exc.__class__.__name__}: {exc}")
            self.close_connection = True

    def do_GET(self):
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_GET

    def do_CONNECT(self):
        """Stands in for a forward proxy's tunnel: whatever host the client names, the tunnel
        leads back to this server, so the requests that follow are served here."""
        app = self.server.app
        app.record_request({"time": time.time(), "method": "CONNECT", "path": self.path, "query": "",
                            "form": {}, "headers": {"User-Agent": self.headers.get("User-Agent")},
                            "peer_port": self.client_address[1], "content_encoding": None,
                            "status": 200, "fault": None})
        app.log(f"CONNECT {self.path} -> 200 (a tunnel back to this server)")
        self.send_response(200, "Connection established")
        self.end_headers()

    # -- request plumbing ------------------------------------------------------

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
        app = self.server.app
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
                reply, after = app.control(self.command, path, query, body)
            except ApiError as exc:
                reply, after = exc.reply(), None
            self._send(reply)
            if after is not None:
                after()
            return
        form = self._form(body)
        auth = self.headers.get("Authorization")
        entry = {"time": time.time(), "method": self.command, "path": path, "query": query,
                 "form": form, "headers": {
                     "User-Agent": self.headers.get("User-Agent"),
                     "Accept-Encoding": self.headers.get("Accept-Encoding"),
                     # The scheme only: credentials never leave the server.
                     "Authorization": auth.split()[0] if auth and auth.split() else None},
                 # The client's port on this connection: equal ports mean a reused connection.
                 "peer_port": self.client_address[1],
                 # Set by _send: "gzip" when the reply body went out gzipped.
                 "content_encoding": None}
        reply, fault = self._handle_api(path, query, form)
        entry["status"] = reply.status if reply is not None else None
        entry["fault"] = fault["kind"] if fault is not None else None
        # Recorded before anything is sent, so a client that has its reply
        # always finds the request in /test/stats and /test/requests.
        app.record_request(entry)
        app.log(f"{self.command} {path} -> {entry['status']}"
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
        app = self.server.app
        methods = ROUTES.get(path)
        fault = None
        try:
            if methods is None:
                raise ApiError(404, "Not Found")
            if self.command not in methods:
                raise ApiError(405, "Method Not Allowed", code=None,
                               allowed_methods=sorted(methods))
            user = app.authenticate(self.headers.get("Authorization"))
            values = dict(parse_qsl(query, keep_blank_values=True))
            values.update(form)   # the form body wins, as in Zulip's typed_endpoint
            params = Params(values)
            fault = app.take_fault(path, self.command)
            if fault is not None:
                if fault["kind"] in TRANSPORT_FAULTS:
                    return None, fault
                if fault["kind"] in HTTP_FAULTS:
                    return self._fault_reply(fault), fault
                if fault["kind"] == "delay":
                    app.stopping.wait(fault.get("seconds", 1.0))
                elif fault["kind"] == "gc" and values.get("queue_id"):
                    app.gc_queue_now(values["queue_id"])
            rate_headers = app.check_rate_limit(user)
            if path == "/api/v1/register":
                reply = app.register(user, params, self._site())
            elif path == "/api/v1/events" and self.command == "GET":
                reply = app.get_events(user, params, self._peer_alive)
                if reply is None:
                    return None, None
            elif path == "/api/v1/events":
                reply = app.delete_queue(user, params)
            elif path == "/api/v1/messages":
                reply = app.send_message_endpoint(user, params)
            else:
                reply = success({"user_id": user["user_id"], "id": user["user_id"],
                                 "email": user["email"], "full_name": user["full_name"],
                                 "is_bot": user["is_bot"], "is_admin": False,
                                 "role": 400, "avatar_url": gravatar_url(user["email"])},
                                params.ignored())
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
        stamp = self.server.app.config["stamp_written_at"] and WRITTEN_AT_BYTES in body
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
            elif mode == "trickle":
                data = head + body
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    if self.server.app.stopping.wait(fault["interval"]):
                        break
            else:
                self.wfile.write(stamp_written_at(head + body) if stamp else head + body)
        except OSError as exc:
            self.server.app.log(f"could not send reply: {exc.__class__.__name__}: {exc}")
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
        app = self.server.app
        self.close_connection = True
        if kind == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif kind == "silent":
            # A half-open connection: the request was read, nothing ever comes back.
            app.stopping.wait(min(fault.get("seconds", 3600.0), app.remaining_lifetime()))
        else:   # raw: whatever bytes the test wants, then EOF
            try:
                self.wfile.write(fault["data"])
            except OSError as exc:
                app.log(f"raw fault: could not send: {exc}")


class DevHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024   # benchmarks open ~1,000 long-polls at once
    allow_reuse_address = True

    def __init__(self, address, app, tls_context):
        self.app = app
        self.tls_context = tls_context
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):   # TLS handshake failures, resets: one line
            self.app.log(f"connection from {client_address[0]}:{client_address[1]} failed: "
                         f"{exc.__class__.__name__}: {exc}")
        else:   # a bug in this server: show it in full
            super().handle_error(request, client_address)


# ---------------------------------------------------------------------------
# Command line


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
    app = DevServer(args)
    servers = [DevHTTPServer((args.host, args.port), app, tls_context(args))]
    if args.plain_port_file:
        servers.append(DevHTTPServer((args.host, 0), app, None))
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
    threading.Thread(target=app.gc_loop, daemon=True).start()
    port_files = [(args.port_file, servers[0]), (args.plain_port_file, servers[-1])]
    for path, server in port_files:
        if path:
            write_port_file(path, server.server_port)
    app.log(f"listening on {'https' if args.tls_cert else 'http'}://{args.host}:"
            f"{servers[0].server_port} (pid {os.getpid()})")

    reason = "shutdown requested"
    try:
        while not app.stopping.wait(min(1.0, max(0.01, app.remaining_lifetime()))):
            if app.remaining_lifetime() <= 0:
                reason = "lifetime over"
                break
            if args.parent_pid and process_gone(args.parent_pid):
                reason = f"parent {args.parent_pid} is gone"
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    app.stopping.set()
    app.gc_kick.set()
    app.log(f"exiting: {reason}")
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
