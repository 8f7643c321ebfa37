"""Scheduled actions for POST /test/schedule: a spec that is about to block in a long-poll asks
the server to do something to itself a little later (send a message as a user, make a control
call, make an authenticated GET, send a series of messages spread over time, wait until some
users have queues), and the server's own threads do it.

Each schedule is a list of steps run in order by one daemon thread, each after its `delay`
(seconds after the step before it ended).  Requests for the API go over HTTP to this server, so
they meet faults, rate limits and the request log exactly as a client's would; control calls run
in-process.  /test/reset cancels every schedule (a step already under way finishes, nothing after
it runs), and the threads end with the server.  Standard library only.
"""

import base64
import json
import ssl
import threading
import time
import urllib.request
from urllib.parse import urlencode

from realm import ApiError, bad_request

ACTIONS = ("send", "messages", "get", "control", "wait_queues")
API_TIMEOUT = 10          # seconds for a POST /messages
GET_TIMEOUT = 30          # seconds for an authenticated GET (it may long-poll)
WAIT_QUEUES_TIMEOUT = 15  # default seconds wait_queues waits before it goes on anyway
WAIT_QUEUES_POLL = 0.02


def _form_value(value):
    # Strings go verbatim, anything else as compact JSON (spec/support/devserver.lua's form).
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _number(name, value, default):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise bad_request(f"{name} must be a non-negative number")
    return float(value)


class Scheduler:
    """Runs schedules; the HTTP layer's address is set by main once the servers listen."""

    def __init__(self, realm, control):
        self.realm = realm
        self.control = control
        self.base_url = None   # http(s)://host:port of a listener this server serves
        self.lock = threading.Lock()
        self.next_id = 1
        self.active = {}       # schedule id -> its cancel Event

    # -- POST /test/schedule ---------------------------------------------------

    def schedule(self, data):
        steps = data.get("steps")
        if not isinstance(steps, list) or not steps:
            raise bad_request("steps (a non-empty list) required")
        checked = [self._check_step(i, step) for i, step in enumerate(steps)]
        cancelled = threading.Event()
        with self.lock:
            sid = self.next_id
            self.next_id += 1
            self.active[sid] = cancelled
        threading.Thread(target=self._run, args=(sid, checked, cancelled), daemon=True).start()
        return sid

    def cancel_all(self):
        with self.lock:
            for cancelled in self.active.values():
                cancelled.set()
            self.active.clear()

    def _user(self, where, email):
        user = self.realm.world.user_by_email.get(str(email).lower())
        if user is None or not user["api_key"]:
            raise bad_request(f"{where}: unknown user {email!r}")
        return user

    def _check_step(self, i, step):
        where = f"steps[{i}]"
        if not isinstance(step, dict):
            raise bad_request(f"{where} is not an object")
        actions = [a for a in ACTIONS if a in step]
        unknown = set(step) - set(ACTIONS) - {"delay"}
        if len(actions) != 1 or unknown:
            raise bad_request(f"{where} needs exactly one of {', '.join(ACTIONS)}")
        action = actions[0]
        arg = step[action]
        if not isinstance(arg, dict):
            raise bad_request(f"{where}.{action} is not an object")
        out = {"delay": _number(f"{where}.delay", step.get("delay"), 0.0), "action": action}
        if action == "send":
            message = arg.get("message")
            if not isinstance(message, dict):
                raise bad_request(f"{where}.send.message (an object) required")
            out.update(user=self._user(where, arg.get("user")),
                       body=urlencode({k: _form_value(v) for k, v in sorted(message.items())}))
        elif action == "messages":
            contents = arg.get("contents")
            if not isinstance(contents, list) or not all(isinstance(c, str) for c in contents):
                raise bad_request(f"{where}.messages.contents (a list of strings) required")
            base = {"type": "stream", "to": arg.get("to", "Denmark"), "topic": arg.get("topic", "t")}
            out.update(user=self._user(where, arg.get("user", "alice@example.com")),
                       bodies=[urlencode({k: _form_value(v) for k, v in dict(base, content=c).items()})
                               for c in contents],
                       gap=_number(f"{where}.messages.spread", arg.get("spread"), 0.0)
                       / max(1, len(contents)))
        elif action == "get":
            path = arg.get("path")
            if not isinstance(path, str) or not path.startswith("/api/"):
                raise bad_request(f"{where}.get.path (an /api/ path) required")
            out.update(user=self._user(where, arg.get("user")), path=path)
        elif action == "control":
            method, path = arg.get("method", "POST"), arg.get("path")
            if method not in ("GET", "POST") or not isinstance(path, str) \
                    or not path.startswith("/test/"):
                raise bad_request(f"{where}.control needs method (GET or POST) and a /test/ path")
            body = arg.get("body", {})
            out.update(method=method, path=path,
                       body=json.dumps(body).encode("utf-8") if method == "POST" else b"")
        else:   # wait_queues
            owners = arg.get("owners")
            if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
                raise bad_request(f"{where}.wait_queues.owners (a list of emails) required")
            out.update(owners=[o.lower() for o in owners],
                       timeout=_number(f"{where}.wait_queues.timeout", arg.get("timeout"),
                                       WAIT_QUEUES_TIMEOUT))
        return out

    # -- the schedule's thread -------------------------------------------------

    def _run(self, sid, steps, cancelled):
        log = self.realm.log
        try:
            for i, step in enumerate(steps):
                if cancelled.wait(step["delay"]) or self.realm.stopping.is_set():
                    log(f"schedule {sid}: cancelled before step {i}")
                    return
                try:
                    getattr(self, "_do_" + step["action"])(step, cancelled)
                except (OSError, ApiError, ValueError) as exc:
                    # As a client's would, the schedule stops at a failed request.
                    log(f"schedule {sid}: step {i} ({step['action']}) failed: "
                        f"{exc.__class__.__name__}: {exc}; the rest is dropped")
                    return
            log(f"schedule {sid}: done")
        finally:
            with self.lock:
                self.active.pop(sid, None)

    def _request(self, method, path, user, body=None, timeout=API_TIMEOUT):
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        credentials = f"{user['email']}:{user['api_key']}".encode("utf-8")
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode("ascii"))
        request.add_header("User-Agent", "lua-zulip-devserver-schedule")
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        context = ssl._create_unverified_context() if self.base_url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            reply.read()

    def _do_send(self, step, _cancelled):
        self._request("POST", "/api/v1/messages", step["user"], step["body"].encode("utf-8"))

    def _do_messages(self, step, cancelled):
        for body in step["bodies"]:
            if cancelled.is_set():
                return
            self._request("POST", "/api/v1/messages", step["user"], body.encode("utf-8"))
            if cancelled.wait(step["gap"]):
                return

    def _do_get(self, step, _cancelled):
        self._request("GET", step["path"], step["user"], timeout=GET_TIMEOUT)

    def _do_control(self, step, _cancelled):
        path, _, query = step["path"].partition("?")
        reply, after = self.control.handle(step["method"], path, query, step["body"])
        if reply.status != 200:
            raise ValueError(f"{step['path']} -> {reply.status}: {reply.body[:200]!r}")
        if after is not None:
            after()

    def _do_wait_queues(self, step, cancelled):
        deadline = time.monotonic() + step["timeout"]
        while time.monotonic() < deadline:
            with self.realm.lock:
                have = {q.owner["email"].lower() for q in self.realm.queues.values()}
            if all(o in have for o in step["owners"]):
                return
            if cancelled.wait(WAIT_QUEUES_POLL):
                return
        self.realm.log(f"wait_queues: no queue for some of {step['owners']} after "
                       f"{step['timeout']} s; going on")
