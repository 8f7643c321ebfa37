"""The dev server's /test/ control endpoints: faults and random faults, config, reset, stats,
the request log, queue GC, pushed events and messages, and scheduled actions (schedule.py).

They need no auth and take and give JSON (devserver/README.md has the table).  They work on the
realm (realm.py) under its lock; the faults and the request log they keep here are read by the
HTTP layer (httpd.py).  Standard library only.
"""

import base64
import collections
import json
import random
from urllib.parse import parse_qsl

from realm import BUILTIN_CHANNELS, BUILTIN_USERS, ApiError, bad_request, success
from schedule import Scheduler
from world import ACTIONS, ActionError, World

REQUEST_LOG_SIZE = 500

# Fault kinds that replace the request's handling, leaving server state alone:
# at the TCP level, or with a canned HTTP reply.
TRANSPORT_FAULTS = ("reset", "silent", "raw")
HTTP_FAULTS = ("status500", "html502", "invalid_json", "ratelimit", "unauthorized")
# Fault kinds that do something first, then let the request run normally.
PRE_FAULTS = ("delay", "gc")
# Fault kinds that run the request normally and then mangle the delivery.
DELIVERY_FAULTS = ("close_after_headers", "truncate", "trickle", "close_after_reply", "reset_after_reply")
FAULT_KINDS = TRANSPORT_FAULTS + HTTP_FAULTS + PRE_FAULTS + DELIVERY_FAULTS
DEFAULT_RANDOM_KINDS = ("reset", "status500", "html502", "invalid_json", "ratelimit",
                        "truncate", "close_after_headers")

HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n")
NOT_JSON = b'<!DOCTYPE html>this is not JSON {"result": "success"'


class Control:
    """The /test/ endpoints, the faults they arm and the request log they show."""

    def __init__(self, realm):
        self.realm = realm
        self.next_fault_id = 1
        self.scheduler = Scheduler(realm, self)
        self._reset_locked()

    def _reset_locked(self):
        self.faults = []
        self.random_faults = None
        self.request_counts = collections.Counter()
        self.request_log = collections.deque(maxlen=REQUEST_LOG_SIZE)

    # -- used by the HTTP layer -------------------------------------------------

    def take_fault(self, path, method):
        with self.realm.lock:
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

    def record_request(self, entry):
        with self.realm.lock:
            self.request_counts[entry["path"]] += 1
            self.request_log.append(entry)


    def handle(self, method, path, query, body):
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
        return success({"shutting_down": True}), self.realm.stopping.set

    def ctl_reset(self, _data):
        with self.realm.lock:
            self.realm.reset_locked()
            self._reset_locked()
            self.scheduler.cancel_all()
        self.realm.gc_kick.set()
        return success(), None

    def ctl_config(self, data):
        with self.realm.lock:
            config = dict(self.realm.config)
            for key, value in data.items():
                if key not in config:
                    raise bad_request(f"unknown config key {key}")
                config[key] = validate_config(key, value)
            self.realm.config = config
            if "extra_users" in data or "extra_channels" in data:
                # A new world: the synthetic users and channels, and no earlier actions.
                self.realm.world = World(BUILTIN_USERS, BUILTIN_CHANNELS,
                                         config["extra_users"], config["extra_channels"])
        self.realm.gc_kick.set()   # a new gc_interval takes effect now, not after the old one
        return success({"config": config}), None

    def ctl_fault(self, data):
        fault = parse_fault(data)
        count = data.get("count", 1)
        if type(count) is not int or count < 1:
            raise bad_request("count must be a positive integer")
        with self.realm.lock:
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
        with self.realm.lock:
            self.random_faults = setting
        return success(), None

    def ctl_gc_queue(self, data):
        if data.get("all"):
            with self.realm.lock:
                removed = list(self.realm.queues)
                for queue in list(self.realm.queues.values()):
                    self.realm.remove_queue_locked(queue)
            return success({"removed": removed}), None
        queue_id = data.get("queue_id")
        if not isinstance(queue_id, str):
            raise bad_request("queue_id (string) or all=true required")
        return success({"removed": [queue_id] if self.realm.gc_queue_now(queue_id) else []}), None

    def ctl_event(self, data):
        events = data.get("events")
        if events is None:
            events = [data.get("event")]
        if not events or not all(isinstance(e, dict) for e in events):
            raise bad_request("event (object) or events (list of objects) required")
        with self.realm.lock:
            if "queue_id" in data:
                # Straight into one queue, unfiltered: for edge-case payloads.
                queue = self.realm.queues.get(data["queue_id"])
                if queue is None:
                    raise bad_request(f"no queue {data['queue_id']}")
                targets = [(queue, events)]
            else:
                email = str(data.get("user", "")).lower()
                targets = [(q, [e for e in events if q.accepts(e)]) for q in self.realm.queues.values()
                           if not email or q.owner["email"].lower() == email]
            for queue, accepted in targets:
                self.realm.push_locked(queue, accepted)
            queue_ids = [q.id for q, accepted in targets if accepted]
        return success({"queues": queue_ids}), None

    def ctl_messages(self, data):
        count = data.get("count", 1)
        if type(count) is not int or count < 0:
            raise bad_request("count must be a non-negative integer")
        sender = self.realm.world.user_by_email.get(str(data.get("sender", "alice@example.com")).lower())
        if sender is None:
            raise bad_request("unknown sender")
        to = data.get("to", "Denmark")
        msg_type = data.get("type", "private" if isinstance(to, list) else "stream")
        to_raw = json.dumps(to) if isinstance(to, list) else str(to)
        prefix = str(data.get("content_prefix", "m"))
        topic = str(data.get("topic", "t"))
        ids = [self.realm.send_message(sender, msg_type, to_raw, topic, f"{prefix}{i}")
               for i in range(1, count + 1)]
        return success({"count": count, "first_id": ids[0] if ids else None,
                        "last_id": ids[-1] if ids else None}), None

    def ctl_action(self, data):
        """POST /test/action {"action": NAME, ...}: one change to the realm model, its events
        pushed to the queues of the real recipients (world.py has every action)."""
        name = data.get("action")
        try:
            if name == "send":
                return success({"message_id": self._send_action(data)}), None
            if name not in ACTIONS:
                raise ActionError(f"unknown action {name!r}; known: send, {', '.join(ACTIONS)}")
            return success(self.realm.run_action(name, data)), None
        except ActionError as exc:
            raise bad_request(str(exc)) from None

    def _send_action(self, data):
        """send {sender_id, type: "stream"|"private", stream_id | to: [user ids], topic,
        content, mention_user_ids?}: the message path of POST /messages."""
        sender = self.realm.world.user_by_id.get(data.get("sender_id"))
        if sender is None or type(data.get("sender_id")) is not int:
            raise ActionError("sender_id: no such user")
        if not sender["is_active"]:
            raise ActionError(f"sender {sender['user_id']} is deactivated")
        msg_type = data.get("type", "stream")
        if msg_type == "stream":
            if type(data.get("stream_id")) is not int:
                raise ActionError("stream_id (an integer) is required")
            to = json.dumps(data["stream_id"])
        elif msg_type == "private":
            to_ids = data.get("to")
            if not isinstance(to_ids, list) or not to_ids \
                    or not all(type(u) is int for u in to_ids):
                raise ActionError("to (a non-empty list of user ids) is required")
            to = json.dumps(to_ids)
        else:
            raise ActionError('type must be "stream" or "private"')
        content = data.get("content", "")
        topic = data.get("topic")
        mentions = data.get("mention_user_ids", [])
        if not isinstance(content, str) or (topic is not None and not isinstance(topic, str)):
            raise ActionError("content and topic are strings")
        if not isinstance(mentions, list) or not all(type(u) is int for u in mentions):
            raise ActionError("mention_user_ids is not a list of integers")
        return self.realm.send_message(sender, msg_type, to, topic, content,
                                       mention_ids=mentions)

    def ctl_schedule(self, data):
        return success({"schedule_id": self.scheduler.schedule(data)}), None

    def ctl_stats(self, _data):
        with self.realm.lock:
            return success({
                "queues": len(self.realm.queues), "requests": dict(self.request_counts),
                "faults_pending": sum(f["count"] for f in self.faults),
                "longpolls_waiting": sum(1 for q in self.realm.queues.values() if q.waiter),
                "config": dict(self.realm.config),
            }), None

    def ctl_requests(self, data):
        try:
            n = int(data.get("n", 20))
        except ValueError:
            raise bad_request("n must be an integer") from None
        with self.realm.lock:
            entries = list(self.request_log)[-n:] if n > 0 else []
        return success({"requests": entries}), None

    def ctl_queues(self, _data):
        with self.realm.lock:
            return success({"queues": [q.describe() for q in self.realm.queues.values()]}), None


CONTROL_ROUTES = {
    "/test/shutdown": Control.ctl_shutdown,
    "/test/reset": Control.ctl_reset,
    "/test/config": Control.ctl_config,
    "/test/fault": Control.ctl_fault,
    "/test/random_faults": Control.ctl_random_faults,
    "/test/gc_queue": Control.ctl_gc_queue,
    "/test/event": Control.ctl_event,
    "/test/messages": Control.ctl_messages,
    "/test/schedule": Control.ctl_schedule,
    "/test/action": Control.ctl_action,
    "/test/stats": Control.ctl_stats,
    "/test/requests": Control.ctl_requests,
    "/test/queues": Control.ctl_queues,
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

