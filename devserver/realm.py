"""The dev server's Zulip server: event queues and the behaviour of the API endpoints
(register, events, messages, users/me), behind one lock, over the realm model of world.py
(users, channels, messages and the rest), which register reads and actions change.

The HTTP layer (httpd.py) parses requests and calls in here; the /test/ control endpoints
(control.py) change and inspect this state (POST /test/action runs a model action and
delivers its events with deliver_locked).  Standard library only.
"""

import base64
import collections
import html
import json
import re
import sys
import threading
import time
import uuid

from world import Message, World, gravatar_url

ZULIP_VERSION = "11.0-dev+lua-zulip-devserver"
ZULIP_MERGE_BASE = "11.0-dev"
ZULIP_FEATURE_LEVEL = 481
MESSAGE_CLIENT = "lua-zulip-devserver"
MAX_QUEUE_LIFESPAN_SECS = 7 * 24 * 3600
# register's idle_queue_timeout (level 481): seconds, or "mobile"; at most a week
MOBILE_IDLE_QUEUE_TIMEOUT_SECS = 12 * 3600
MAX_IDLE_QUEUE_TIMEOUT_SECS = 7 * 24 * 3600
# With the stamp_written_at config, each event of a GET /events reply carries "_written_at":
# the server's time.monotonic() just before it writes the reply (for the latency benchmark).
# The mark is replaced by a number of the same width (padded with JSON whitespace), so a reply
# that is not gzipped is stamped after its headers are made, right before the write.
WRITTEN_AT_MARK = "@written_at@" + "." * 10
WRITTEN_AT_BYTES = b'"' + WRITTEN_AT_MARK.encode("ascii") + b'"'


def stamp_written_at(data):
    return data.replace(WRITTEN_AT_BYTES, b"%24.6f" % time.monotonic())

# How often a waiting long-poll checks whether its client went away.
DISCONNECT_CHECK_SECS = 1.0
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


def dump_json(obj):
    """Serialise like orjson does for Zulip: compact, UTF-8, trailing newline."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


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


class Realm:
    """All of the API's state, behind one lock (the control layer shares it)."""

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
        self.queues = {}
        self.reset_locked()

    # -- housekeeping -------------------------------------------------------

    def log(self, text):
        if not self.quiet:
            with self.log_lock:
                sys.stderr.write(f"[devserver {time.strftime('%H:%M:%S')}] {text}\n")
                sys.stderr.flush()

    def remaining_lifetime(self):
        return max(0.0, self.lifetime - (time.monotonic() - self.started))

    def reset_locked(self):
        """Drops the queues (waiting GETs end with 200) and rate-limit buckets and restores the
        command-line config (the API's part of /test/reset)."""
        for queue in list(self.queues.values()):
            self.remove_queue_locked(queue)
        self.config = dict(self.defaults)
        self.world = World(BUILTIN_USERS, BUILTIN_CHANNELS)
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
                        self.remove_queue_locked(queue)
                        self.log(f"gc: collected queue {queue.id}")

    # -- queues (lock held) ---------------------------------------------------

    def _finish_waiter_locked(self, queue):
        """End a waiting GET with HTTP 200 and the queue's current contents."""
        waiter, queue.waiter = queue.waiter, None
        if waiter is not None:
            waiter.finish(list(queue.events))
            return True
        return False

    def remove_queue_locked(self, queue):
        self._finish_waiter_locked(queue)
        self.queues.pop(queue.id, None)

    def push_locked(self, queue, events):
        """Append events (ids assigned here) and wake the queue's waiter once."""
        for event in events:
            event = dict(event)
            event["id"] = queue.next_event_id
            queue.next_event_id += 1
            queue.events.append(event)
        if events:
            self._finish_waiter_locked(queue)

    def deliver_locked(self, pushes):
        """Hands the model's events (world.Push) to every queue whose owner is among the
        recipients and whose filters take the event, in order."""
        for push in pushes:
            for queue in list(self.queues.values()):
                if not push.to.has(queue.owner["user_id"]):
                    continue
                event = push.per_queue(queue, push.event) if push.per_queue else push.event
                if queue.accepts(event):
                    self.push_locked(queue, [event])

    def run_action(self, name, data):
        """POST /test/action: one model action under the lock, its events delivered.
        Returns the action's reply data; raises world.ActionError on bad arguments."""
        with self.lock:
            reply, pushes = getattr(self.world, name)(data)
            self.deliver_locked(pushes)
        return reply

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
        user = self.world.user_by_key.get(api_key)
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

    def gc_queue_now(self, queue_id):
        with self.lock:
            queue = self.queues.get(queue_id)
            if queue is not None:
                self.remove_queue_locked(queue)
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
                self.push_locked(queue, [{"type": "heartbeat"}])
                last_event_id = queue.next_event_id - 1
            max_message_id = self.world.max_message_id(user["user_id"])
            idle_timeout_secs = queue.timeout(self.config["queue_timeout"])
            longpoll_timeout = self.config["longpoll_timeout_seconds"]
            wanted = fetch_event_types if fetch_event_types is not None else event_types

            def want(event_type):
                return wanted is None or event_type in wanted

            # Built under the lock from the live model: an action after this is in the queue.
            model_state = self.world.state(user, want, include_subscribers, client_gravatar)

        state = {"queue_id": queue.id, "zulip_version": ZULIP_VERSION,
                 "zulip_feature_level": ZULIP_FEATURE_LEVEL,
                 "zulip_merge_base": ZULIP_MERGE_BASE, "last_event_id": last_event_id,
                 "idle_queue_timeout_secs": int(idle_timeout_secs)}
        if want("realm"):
            if longpoll_timeout is not None:
                state["event_queue_longpoll_timeout_seconds"] = longpoll_timeout
            state.update(realm_url=site, realm_uri=site, max_message_length=10000,
                         max_topic_length=60, max_stream_name_length=60)
        if want("message"):
            state["max_message_id"] = max_message_id
        state.update(model_state)
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
                self.push_locked(queue, [{"type": "heartbeat"}])
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
            self.remove_queue_locked(self._access_queue_locked(queue_id, user))
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

    def _resolve_recipients(self, world, msg_type, to):
        """Returns (channel, None) or (None, participants) for the raw 'to' value."""
        try:
            parsed = json.loads(to)
        except ValueError:
            parsed = to
        if msg_type in ("stream", "channel"):
            if isinstance(parsed, list) and len(parsed) == 1:
                parsed = parsed[0]
            if type(parsed) is int:
                channel = world.channel_by_id.get(parsed)
                if channel is None:
                    raise bad_request(f"Channel with ID '{parsed}' does not exist",
                                      code="STREAM_DOES_NOT_EXIST")
                return channel, None
            name = parsed if isinstance(parsed, str) else to
            channel = world.channel_by_name.get(name.strip().lower())
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
                found = (world.user_by_id.get(item) if type(item) is int
                         else world.user_by_email.get(str(item).strip().lower()))
                if found is None or not found["is_active"]:
                    raise bad_request(f"Invalid email '{item}'")
                users.append(found)
            if not users:
                raise bad_request("Message must have recipients")
            return None, users
        raise bad_request("Invalid message type")

    def send_message(self, sender, msg_type, to, topic, content, sender_queue_id=None,
                     local_id=None, mention_ids=()):
        """Store the message with each recipient's flags (the sender's "read", "mentioned" for
        @**Full Name** and mention_ids) and fan a message event out to every queue that should
        see it (Zulip's process_message_event).  Returns the id."""
        if not content.strip():
            raise bad_request("Message must not be empty")
        with self.lock:
            channel, dm_users = self._resolve_recipients(self.world, msg_type, to)
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
                recipients = set(self.world.subscriber_ids(channel)) | {sender["user_id"]}
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
            mentioned = self.world.mentioned_ids(content) | set(mention_ids)
            stored = Message(message_id, sender["user_id"], message["type"],
                             message.get("stream_id"), message["subject"], recipients,
                             recipients if channel is None else ())
            for uid in recipients:
                flags = set()
                if uid == sender["user_id"]:
                    flags.add("read")
                if uid in mentioned:
                    flags.add("mentioned")
                if flags:
                    stored.flags[uid] = flags
            later = self.world.add_message(stored, channel)
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
                self.push_locked(queue, [event])
            self.deliver_locked(later)   # a channel's first message: stream update
        return message_id

    # -- GET /api/v1/users/me ---------------------------------------------------

    def users_me(self, user, params):
        return success({"user_id": user["user_id"], "id": user["user_id"],
                        "email": user["email"], "full_name": user["full_name"],
                        "is_bot": user["is_bot"], "is_admin": False,
                        "role": 400, "avatar_url": gravatar_url(user["email"])},
                       params.ignored())
