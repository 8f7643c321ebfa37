"""The dev server's realm model: users, channels and subscriptions, messages with their per-user
flags, user groups, realm settings, user settings, muted users, user topics and custom emoji.

Everything here is mutated under the server's lock (realm.py holds it).  Each action checks its
arguments, changes the model and returns the events it causes as `Push`es (an event and who gets
it), in the order the real Zulip server sends them; realm.py hands them to the queues.  The
register state is built from the same model (`World.state`), so "old register + events applied"
equals a fresh register.  The shapes follow Zulip at feature level 481 and the rules of its
apply_event (zerver/lib/events.py); the docstrings say where this model is simpler than the
real server.  Standard library only.
"""

import hashlib
import html
import re
import time

ROLE_OWNER, ROLE_ADMIN, ROLE_MODERATOR, ROLE_MEMBER, ROLE_GUEST = 100, 200, 300, 400, 600
ROLES = (ROLE_OWNER, ROLE_ADMIN, ROLE_MODERATOR, ROLE_MEMBER, ROLE_GUEST)
BOT_OWNER_ID = 11          # alice owns the builtin bot and, by default, created ones
# first_message_id of the builtin and synthetic channels: they have history from before the
# server started (older than any message it stores), so sending, deleting and moving messages
# never change it and existing queues see no stream update for it.  New channels start with
# none (null) and get stream update first_message_id events.
HISTORY = 0
DEFAULT_COLOR = "#76ce90"
DATE_JOINED = "2024-01-01T00:00:00+00:00"
CHANNEL_CREATED = 1704067200
REALM_NAME = "lua-zulip dev realm"
LANGUAGES = {"en": "English", "de": "Deutsch", "fr": "français", "es": "español",
             "it": "italiano", "ja": "日本語", "pt": "Português"}
COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}\Z")
MENTION_RE = re.compile(r"@\*\*([^*]+)\*\*")
SUB_PROPERTIES = {"color": "color", "is_muted": bool, "pin_to_top": bool,
                  "desktop_notifications": "bool_or_null", "audible_notifications": "bool_or_null",
                  "push_notifications": "bool_or_null", "email_notifications": "bool_or_null",
                  "wildcard_mentions_notify": "bool_or_null"}
SUB_DEFAULTS = {"color": DEFAULT_COLOR, "is_muted": False, "pin_to_top": False,
                "desktop_notifications": None, "audible_notifications": None,
                "push_notifications": None, "email_notifications": None,
                "wildcard_mentions_notify": None}
USER_SETTINGS_DEFAULTS = {
    "twenty_four_hour_time": False, "default_language": "en", "emojiset": "google",
    "enter_sends": False, "color_scheme": 1, "notification_sound": "zulip",
    "fluid_layout_width": False, "high_contrast_mode": False, "starred_message_counts": True,
    "display_emoji_reaction_users": True, "send_private_typing_notifications": True,
}
EMOJISETS = ("google", "twitter", "text", "google-blob")
REALM_DEFAULTS = {
    "name": REALM_NAME, "description": "", "default_language": "en",
    "waiting_period_threshold": 0, "message_content_edit_limit_seconds": 600,
    "allow_message_editing": True,
    "icon_url": "https://secure.gravatar.com/avatar/lua-zulip-realm?d=identicon&version=1",
    "icon_source": "G",
}
# update_realm takes these (realm op:update); update_realm_dict the rest (op:update_dict).
REALM_UPDATE_PROPERTIES = ("name", "default_language", "waiting_period_threshold")
REALM_DICT_PROPERTIES = ("description", "message_content_edit_limit_seconds",
                         "allow_message_editing", "icon_url", "icon_source")


class ActionError(ValueError):
    """A bad /test/action request (control.py turns it into a 400 BAD_REQUEST)."""


def gravatar_url(email):
    digest = hashlib.md5(email.lower().encode("utf-8")).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?d=identicon&version=1"


def api_key_for(user_id):
    """A deterministic 32-character key, so created users can log in too."""
    return hashlib.md5(f"lua-zulip user {user_id}".encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------
# Who gets an event


class To:
    """The users an event goes to: the given ids, or everyone but `exclude` (all=True)."""

    __slots__ = ("ids", "exclude", "all")

    def __init__(self, ids=(), exclude=(), all=False):
        self.ids = frozenset(ids)
        self.exclude = frozenset(exclude)
        self.all = all

    def has(self, user_id):
        if self.all:
            return user_id not in self.exclude
        return user_id in self.ids and user_id not in self.exclude


EVERYONE = To(all=True)


class Push:
    """One event for the users in `to`.  `per_queue(queue, event)`, when given, returns the
    event as that queue gets it (per-user flags, the queue's client_gravatar)."""

    __slots__ = ("event", "to", "per_queue")

    def __init__(self, event, to, per_queue=None):
        self.event = event
        self.to = to
        self.per_queue = per_queue


# ---------------------------------------------------------------------------
# Parts of the model


class Subscribers:
    """A channel's subscriber ids.  The synthetic channels of /test/config all start with the
    same 10,000-odd subscribers, so they share one sorted tuple (`base`) and keep only their
    own changes (`added`, disjoint from base; `removed`, a subset of base)."""

    __slots__ = ("base", "base_set", "added", "removed")

    def __init__(self, base=(), base_set=None):
        self.base = tuple(base)
        self.base_set = base_set if base_set is not None else frozenset(self.base)
        self.added = set()
        self.removed = set()

    def __contains__(self, user_id):
        if user_id in self.added:
            return True
        return user_id in self.base_set and user_id not in self.removed

    def __len__(self):
        return len(self.base) - len(self.removed) + len(self.added)

    def ids(self):
        """The ids, ascending."""
        if not self.added and not self.removed:
            return list(self.base)
        kept = [u for u in self.base if u not in self.removed] if self.removed else list(self.base)
        return sorted(kept + list(self.added)) if self.added else kept

    def __iter__(self):
        return iter(self.ids())

    def add(self, user_id):
        if user_id in self:
            return False
        if user_id in self.base_set:
            self.removed.discard(user_id)
        else:
            self.added.add(user_id)
        return True

    def remove(self, user_id):
        if user_id not in self:
            return False
        if user_id in self.added:
            self.added.discard(user_id)
        else:
            self.removed.add(user_id)
        return True


class Message:
    """A stored message: what the state needs (no content).  `recipients` are the users with a
    UserMessage row (the real server's), fixed at send time; `flags` holds each one's non-empty
    flag set."""

    __slots__ = ("id", "sender_id", "type", "stream_id", "topic", "recipients", "flags",
                 "participants")

    def __init__(self, message_id, sender_id, msg_type, stream_id, topic, recipients,
                 participants):
        self.id = message_id
        self.sender_id = sender_id
        self.type = msg_type              # "stream" or "private"
        self.stream_id = stream_id
        self.topic = topic
        self.recipients = frozenset(recipients)
        self.flags = {}
        self.participants = tuple(sorted(participants))   # private: everyone in it, ascending

    def user_flags(self, user_id):
        return sorted(self.flags.get(user_id, ()))

    def is_unread(self, user_id):
        return user_id in self.recipients and "read" not in self.flags.get(user_id, ())


# ---------------------------------------------------------------------------
# Checking action arguments


def _arg(data, name, kind, default=..., allow_null=False):
    if name not in data or (data[name] is None and not allow_null):
        if default is ...:
            raise ActionError(f"{name} is required")
        return default
    value = data[name]
    if value is None and allow_null:
        return None
    if kind is int and (type(value) is not int):
        raise ActionError(f"{name} is not an integer")
    if kind is bool and type(value) is not bool:
        raise ActionError(f"{name} is not a boolean")
    if kind is str and not isinstance(value, str):
        raise ActionError(f"{name} is not a string")
    if kind is list:
        if value == {}:
            return []   # an empty Lua table encodes as {}: take it for the empty list
        if not isinstance(value, list) or not all(type(v) is int for v in value):
            raise ActionError(f"{name} is not a list of integers")
    if kind is dict and not isinstance(value, dict):
        raise ActionError(f"{name} is not an object")
    return value


def _check_value(name, kind, value):
    if kind is bool:
        if type(value) is not bool:
            raise ActionError(f"{name} must be a boolean")
    elif kind == "bool_or_null":
        if value is not None and type(value) is not bool:
            raise ActionError(f"{name} must be a boolean or null")
    elif kind == "color":
        if not isinstance(value, str) or not COLOR_RE.match(value):
            raise ActionError(f"{name} must be a color like #76ce90")
    return value


TYPE_NAMES = {bool: "boolean", int: "integer", str: "string"}


def _same_type(name, default, value):
    if type(value) is not type(default):
        raise ActionError(f"{name} must be a {TYPE_NAMES[type(default)]}")
    return value


# ---------------------------------------------------------------------------
# The world


class World:
    """The mutable realm.  Built fresh on /test/reset, and by /test/config when it sets
    extra_users or extra_channels (synthetic users 1001.. and channels 1001.. subscribed by the
    bot, alice and every synthetic user); actions made before are then gone."""

    def __init__(self, builtin_users, builtin_channels, extra_users=0, extra_channels=0):
        self.users = []
        self.user_by_id = {}
        self.user_by_email = {}
        self.user_by_key = {}
        self.ids_by_name = {}          # full_name -> set of ids, for @**name** mentions
        self.inactive = set()          # deactivated user ids (few): left out of subscriber lists
        self.bots_by_owner = {}        # owner id -> [bot ids]
        for u in builtin_users:
            self._add_user(dict(u, role=ROLE_MEMBER, timezone="", date_joined=DATE_JOINED,
                                bot_type=1 if u["is_bot"] else None,
                                bot_owner_id=BOT_OWNER_ID if u["is_bot"] else None))
        extra_ids = []
        for i in range(1, extra_users + 1):
            extra_ids.append(1000 + i)
            self._add_user({"user_id": 1000 + i, "email": f"user{i}@example.com",
                            "full_name": f"Synthetic User {i}", "api_key": None,
                            "is_bot": False, "is_active": True, "role": ROLE_MEMBER,
                            "timezone": "", "date_joined": DATE_JOINED, "bot_type": None,
                            "bot_owner_id": None})
        self.next_user_id = max(self.user_by_id) + 1
        self.channels = {}             # stream_id -> channel, in id order
        self.channel_by_id = self.channels
        self.channel_by_name = {}
        for c in builtin_channels:
            self._add_channel(c["stream_id"], c["name"], "", False, Subscribers(c["subscribers"]),
                              HISTORY)
        shared = (10, 11, *extra_ids)
        shared_set = frozenset(shared)
        for j in range(1, extra_channels + 1):
            self._add_channel(1000 + j, f"Channel {j}", "", False, Subscribers(shared, shared_set),
                              HISTORY)
        self.next_stream_id = max(self.channels) + 1
        self.sub_props = {}            # (user id, stream id) -> {property: value} set by the user
        self.unsubscribed = {}         # user id -> {stream ids} once subscribed, now not
        self.messages = {}             # id -> Message, ascending
        self.groups = {}               # id -> group dict (members, direct_subgroup_ids: sets)
        self.next_group_id = 101
        self.realm = dict(REALM_DEFAULTS)
        self.user_settings = {}        # user id -> {property: value} set by the user
        self.muted = {}                # user id -> {muted id: timestamp}, oldest first
        self.user_topics = {}          # user id -> {(stream id, topic lower): topic dict}
        self.emoji = {}                # "id" -> emoji dict
        self.next_emoji_id = 1

    # -- users ------------------------------------------------------------------

    def _add_user(self, user):
        self.users.append(user)
        self.user_by_id[user["user_id"]] = user
        self.user_by_email[user["email"].lower()] = user
        if user["api_key"]:
            self.user_by_key[user["api_key"]] = user
        self.ids_by_name.setdefault(user["full_name"], set()).add(user["user_id"])
        if user["is_bot"]:
            self.bots_by_owner.setdefault(user["bot_owner_id"], []).append(user["user_id"])
        if not user["is_active"]:
            self.inactive.add(user["user_id"])

    def user(self, user_id, name="user_id"):
        user = self.user_by_id.get(user_id)
        if user is None:
            raise ActionError(f"{name}: no user {user_id}")
        return user

    def user_dict(self, user, client_gravatar):
        """The user as register's realm_users and realm_user events show it."""
        role = user["role"]
        d = {
            "user_id": user["user_id"], "email": user["email"], "full_name": user["full_name"],
            "is_bot": user["is_bot"], "is_active": user["is_active"],
            "is_admin": role in (ROLE_OWNER, ROLE_ADMIN), "is_owner": role == ROLE_OWNER,
            "is_guest": role == ROLE_GUEST, "role": role,
            "avatar_url": None if client_gravatar else gravatar_url(user["email"]),
            "avatar_version": 1, "timezone": user["timezone"], "date_joined": user["date_joined"],
            "delivery_email": None,
        }
        if user["is_bot"]:
            d.update(bot_type=user["bot_type"], bot_owner_id=user["bot_owner_id"])
        else:
            d["profile_data"] = {}
        return d

    def bot_dict(self, bot):
        return {"user_id": bot["user_id"], "full_name": bot["full_name"], "email": bot["email"],
                "is_active": bot["is_active"], "owner_id": bot["bot_owner_id"],
                "bot_type": bot["bot_type"], "default_sending_stream": None,
                "default_events_register_stream": None, "default_all_public_streams": False,
                "avatar_url": gravatar_url(bot["email"]), "services": []}

    def mentioned_ids(self, content):
        """Users named as @**Full Name** in content (found by name, not by scanning users)."""
        found = set()
        for name in MENTION_RE.findall(content):
            found |= self.ids_by_name.get(name, set())
        return found

    def create_user(self, data):
        """realm_user add [everyone]; a bot also realm_bot add [its owner: owner_id, default
        alice (11); any active user may own bots here]."""
        full_name = _arg(data, "full_name", str).strip()
        if not full_name:
            raise ActionError("full_name must not be empty")
        is_bot = _arg(data, "is_bot", bool, False)
        owner = self.user(_arg(data, "owner_id", int, BOT_OWNER_ID), "owner_id")
        if not owner["is_active"]:
            raise ActionError(f"owner {owner['user_id']} is deactivated")
        uid = self.next_user_id
        email = _arg(data, "email", str, f"{'bot' if is_bot else 'user'}-{uid}@example.com")
        if email.lower() in self.user_by_email:
            raise ActionError(f"email {email} is taken")
        self.next_user_id += 1
        user = {"user_id": uid, "email": email, "full_name": full_name,
                "api_key": api_key_for(uid), "is_bot": is_bot, "is_active": True,
                "role": ROLE_MEMBER, "timezone": "",
                "date_joined": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "bot_type": 1 if is_bot else None,
                "bot_owner_id": owner["user_id"] if is_bot else None}
        self._add_user(user)
        pushes = [Push({"type": "realm_user", "op": "add"}, EVERYONE,
                       lambda q, e: dict(e, person=self.user_dict(user, q.client_gravatar)))]
        if is_bot:
            pushes.append(Push({"type": "realm_bot", "op": "add", "bot": self.bot_dict(user)},
                               To([owner["user_id"]])))
        return {"user_id": uid, "email": email, "api_key": user["api_key"]}, pushes

    def update_user(self, data):
        """One realm_user update per changed property, in the order full_name, role, timezone
        [everyone]; a bot's full_name also realm_bot update [its owner].  Unchanged values send
        nothing; every argument is checked before anything changes."""
        user = self.user(_arg(data, "user_id", int))
        uid = user["user_id"]
        changes = {}
        if "full_name" in data:
            changes["full_name"] = _arg(data, "full_name", str).strip()
            if not changes["full_name"]:
                raise ActionError("full_name must not be empty")
        if "role" in data:
            changes["role"] = _arg(data, "role", int)
            if changes["role"] not in ROLES:
                raise ActionError(f"role must be one of {ROLES}")
        if "timezone" in data:
            changes["timezone"] = _arg(data, "timezone", str)
        pushes = []
        for prop, value in changes.items():
            if value == user[prop]:
                continue
            if prop == "full_name":
                self.ids_by_name[user["full_name"]].discard(uid)
                self.ids_by_name.setdefault(value, set()).add(uid)
            user[prop] = value
            pushes.append(Push({"type": "realm_user", "op": "update",
                                "person": {"user_id": uid, prop: value}}, EVERYONE))
            if prop == "full_name" and user["is_bot"]:
                pushes.append(Push({"type": "realm_bot", "op": "update",
                                    "bot": {"user_id": uid, "full_name": value}},
                                   To([user["bot_owner_id"]])))
        return {}, pushes

    def _set_active(self, data, active):
        user = self.user(_arg(data, "user_id", int))
        uid = user["user_id"]
        if user["is_active"] == active:
            raise ActionError(f"user {uid} is already {'active' if active else 'deactivated'}")
        user["is_active"] = active
        (self.inactive.discard if active else self.inactive.add)(uid)
        pushes = [Push({"type": "realm_user", "op": "update",
                        "person": {"user_id": uid, "is_active": active}}, EVERYONE)]
        if user["is_bot"]:
            pushes.append(Push({"type": "realm_bot", "op": "update",
                                "bot": {"user_id": uid, "is_active": active}},
                               To([user["bot_owner_id"]])))
        # Their subscriptions stay, but subscriber lists show active users only: peers hear of it.
        op = "peer_add" if active else "peer_remove"
        public, private = [], []
        for c in self.channels.values():
            if uid in c["subscribers"]:
                (private if c["invite_only"] else public).append(c)
        if public:
            pushes.append(Push({"type": "subscription", "op": op,
                                "stream_ids": [c["stream_id"] for c in public], "user_ids": [uid]},
                               To(all=True, exclude=[uid])))
        for c in private:
            pushes.append(Push({"type": "subscription", "op": op, "stream_ids": [c["stream_id"]],
                                "user_ids": [uid]}, self._viewers(c, exclude=[uid])))
        return {}, pushes

    def deactivate_user(self, data):
        """realm_user update is_active:false [everyone] (+ realm_bot update for a bot), then
        subscription peer_remove for the channels they are subscribed to [everyone else who
        sees the subscribers].  The subscriptions themselves stay (reactivate_user brings them
        back with peer_add), as do group memberships and messages; but like the real server,
        subscriber lists and subscriber_count count active users only, and a deactivated user
        receives no new messages."""
        return self._set_active(data, False)

    def reactivate_user(self, data):
        """realm_user update is_active:true (+ realm_bot), then peer_add for their channels."""
        return self._set_active(data, True)

    # -- channels ---------------------------------------------------------------

    def _add_channel(self, stream_id, name, description, invite_only, subscribers,
                     history=None):
        """`history` is the first_message_id of messages from before the server started (the
        builtin and synthetic channels have some: HISTORY), or None for a new channel."""
        channel = {"stream_id": stream_id, "name": name, "description": description,
                   "invite_only": invite_only, "is_archived": False,
                   "date_created": CHANNEL_CREATED, "history": history,
                   "first_message_id": history, "subscribers": subscribers}
        self.channels[stream_id] = channel
        self.channel_by_name[name.lower()] = channel
        return channel

    def channel(self, stream_id):
        channel = self.channels.get(stream_id)
        if channel is None:
            raise ActionError(f"no channel {stream_id}")
        return channel

    def subscriber_ids(self, channel):
        """The channel's active subscribers, ascending."""
        subs = channel["subscribers"]
        if not any(u in subs for u in self.inactive):
            return subs.ids()
        return [u for u in subs.ids() if u not in self.inactive]

    def subscriber_count(self, channel):
        subs = channel["subscribers"]
        return len(subs) - sum(1 for u in self.inactive if u in subs)

    def channel_dict(self, channel, include_subscribers):
        d = {
            "stream_id": channel["stream_id"], "name": channel["name"],
            "description": channel["description"],
            "rendered_description": render(channel["description"]),
            "invite_only": channel["invite_only"], "is_web_public": False,
            "is_archived": channel["is_archived"], "history_public_to_subscribers": True,
            "date_created": channel["date_created"],
            "first_message_id": channel["first_message_id"],
            "message_retention_days": None, "stream_post_policy": 1,
            "subscriber_count": self.subscriber_count(channel),
        }
        if include_subscribers == "partial":
            # Zulip sends a partial list for large channels; here always: the bots among them
            d["partial_subscribers"] = [uid for uid in self.subscriber_ids(channel)
                                        if self.user_by_id[uid]["is_bot"]]
        elif include_subscribers:
            d["subscribers"] = self.subscriber_ids(channel)
        return d

    def sub_dict(self, user_id, channel, include_subscribers):
        d = self.channel_dict(channel, include_subscribers)
        d.update(SUB_DEFAULTS)
        d.update(self.sub_props.get((user_id, channel["stream_id"]), {}))
        return d

    def can_see(self, user_id, channel):
        """Public channels are seen by everyone, private ones by their subscribers."""
        return not channel["invite_only"] or user_id in channel["subscribers"]

    def _viewers(self, channel, exclude=()):
        if not channel["invite_only"]:
            return To(all=True, exclude=exclude)
        return To(self.subscriber_ids(channel), exclude=exclude)

    def create_channel(self, data):
        """stream create [everyone for a public channel; nobody for a private one, which has
        no subscribers yet]."""
        name = _arg(data, "name", str).strip()
        if not name:
            raise ActionError("name must not be empty")
        if name.lower() in self.channel_by_name:
            raise ActionError(f"channel {name} exists")
        description = _arg(data, "description", str, "")
        invite_only = _arg(data, "invite_only", bool, False)
        sid = self.next_stream_id
        self.next_stream_id += 1
        channel = self._add_channel(sid, name, description, invite_only, Subscribers())
        channel["date_created"] = int(time.time())
        pushes = []
        if not invite_only:
            pushes.append(Push({"type": "stream", "op": "create",
                                "streams": [self.channel_dict(channel, False)]}, EVERYONE))
        return {"stream_id": sid}, pushes

    def update_channel(self, data):
        """stream update with the channel's old name [who can see it]: name, description (with
        rendered_description) or is_archived (level 378: archived channels stay, marked)."""
        channel = self.channel(_arg(data, "stream_id", int))
        prop = _arg(data, "property", str)
        event = {"type": "stream", "op": "update", "stream_id": channel["stream_id"],
                 "name": channel["name"], "property": prop}
        if prop == "name":
            value = _arg(data, "value", str).strip()
            if not value:
                raise ActionError("name must not be empty")
            other = self.channel_by_name.get(value.lower())
            if other is not None and other is not channel:
                raise ActionError(f"channel {value} exists")
            del self.channel_by_name[channel["name"].lower()]
            self.channel_by_name[value.lower()] = channel
            channel["name"] = value
        elif prop == "description":
            value = _arg(data, "value", str)
            channel["description"] = value
            event["rendered_description"] = render(value)
        elif prop == "is_archived":
            value = _arg(data, "value", bool)
            channel["is_archived"] = value
        else:
            raise ActionError("property must be name, description or is_archived")
        event["value"] = value
        return {}, [Push(event, self._viewers(channel))]

    def delete_channel(self, data):
        """stream delete [who could see it]; the channel leaves the model, and with it every
        subscription, unsubscribed entry and subscription setting.  Its messages stay (and so
        do unreads in it), as the real server's apply_event keeps them."""
        channel = self.channel(_arg(data, "stream_id", int))
        sid = channel["stream_id"]
        to = self._viewers(channel)
        del self.channels[sid]
        del self.channel_by_name[channel["name"].lower()]
        for gone in self.unsubscribed.values():
            gone.discard(sid)
        for key in [k for k in self.sub_props if k[1] == sid]:
            del self.sub_props[key]
        return {}, [Push({"type": "stream", "op": "delete",
                          "streams": [{"stream_id": sid, "name": channel["name"]}],
                          "stream_ids": [sid]}, to)]

    def _active_ids(self, data):
        ids = [self.user(u, "user_ids")["user_id"] for u in _arg(data, "user_ids", list)]
        for uid in ids:
            if uid in self.inactive:
                raise ActionError(f"user {uid} is deactivated")
        return ids

    def subscribe(self, data):
        """To each new subscriber: for a private channel first stream create (it was not
        visible), then subscription add with the subscribers after the change; then peer_add
        to everyone else who sees the subscribers (everyone for a public channel, the earlier
        subscribers for a private one)."""
        channel = self.channel(_arg(data, "stream_id", int))
        user_ids = self._active_ids(data)
        subs = channel["subscribers"]
        before = self.subscriber_ids(channel) if channel["invite_only"] else None
        new = sorted({u for u in user_ids if u not in subs})
        for uid in new:
            subs.add(uid)
            gone = self.unsubscribed.get(uid)
            if gone:
                gone.discard(channel["stream_id"])
        pushes = []
        for uid in new:
            if channel["invite_only"]:
                pushes.append(Push({"type": "stream", "op": "create",
                                    "streams": [self.channel_dict(channel, False)]}, To([uid])))
            pushes.append(Push({"type": "subscription", "op": "add",
                                "subscriptions": [self.sub_dict(uid, channel, True)]}, To([uid])))
        if new:
            to = To(before, exclude=new) if channel["invite_only"] else To(all=True, exclude=new)
            pushes.append(Push({"type": "subscription", "op": "peer_add",
                                "stream_ids": [channel["stream_id"]], "user_ids": new}, to))
        return {"subscribed": new}, pushes

    def unsubscribe(self, data):
        """One user at a time, ascending: to the removed user subscription remove; for a
        private channel also stream delete (they no longer see it, so it is not in their
        unsubscribed either); then peer_remove to everyone else who sees the subscribers.
        (One at a time, so users removed together still learn of each other, which one
        batched peer_remove that leaves out every removed user would not tell them.)"""
        channel = self.channel(_arg(data, "stream_id", int))
        sid = channel["stream_id"]
        user_ids = self._active_ids(data)
        subs = channel["subscribers"]
        removed = sorted({u for u in user_ids if u in subs})
        gone = [{"stream_id": sid, "name": channel["name"]}]
        pushes = []
        for uid in removed:
            subs.remove(uid)
            if not channel["invite_only"]:
                self.unsubscribed.setdefault(uid, set()).add(sid)
            pushes.append(Push({"type": "subscription", "op": "remove", "subscriptions": gone},
                               To([uid])))
            if channel["invite_only"]:
                pushes.append(Push({"type": "stream", "op": "delete", "streams": gone,
                                    "stream_ids": [sid]}, To([uid])))
            pushes.append(Push({"type": "subscription", "op": "peer_remove", "stream_ids": [sid],
                                "user_ids": [uid]}, self._viewers(channel, exclude=[uid])))
        return {"unsubscribed": removed}, pushes

    def update_subscription(self, data):
        """subscription update [that user], for a subscribed channel."""
        uid = self.user(_arg(data, "user_id", int))["user_id"]
        channel = self.channel(_arg(data, "stream_id", int))
        if uid not in channel["subscribers"]:
            raise ActionError(f"user {uid} is not subscribed to {channel['stream_id']}")
        prop = _arg(data, "property", str)
        if prop not in SUB_PROPERTIES:
            raise ActionError(f"property must be one of {', '.join(SUB_PROPERTIES)}")
        if "value" not in data:
            raise ActionError("value is required")
        value = _check_value("value", SUB_PROPERTIES[prop], data["value"])
        self.sub_props.setdefault((uid, channel["stream_id"]), {})[prop] = value
        return {}, [Push({"type": "subscription", "op": "update",
                          "stream_id": channel["stream_id"], "property": prop, "value": value},
                         To([uid]))]

    # -- messages ---------------------------------------------------------------

    def add_message(self, message, channel=None):
        """Stores a sent message; returns the pushes it causes besides the message event: the
        first message of a new channel sets its first_message_id, which everyone who sees the
        channel hears of as stream update (level 256 sends it when the oldest message
        changes)."""
        self.messages[message.id] = message
        if channel is not None and channel["first_message_id"] is None:
            return self._first_message_changed(channel)
        return []

    def _first_message_changed(self, channel):
        """Recomputes first_message_id (the oldest stored message in the channel, or its
        history from before the server started); returns the stream update push when it
        changed."""
        sid = channel["stream_id"]
        first = min((m.id for m in self.messages.values()
                     if m.type == "stream" and m.stream_id == sid), default=None)
        if channel["history"] is not None:
            first = channel["history"] if first is None else min(first, channel["history"])
        if first == channel["first_message_id"]:
            return []
        channel["first_message_id"] = first
        return [Push({"type": "stream", "op": "update", "stream_id": sid, "name": channel["name"],
                      "property": "first_message_id", "value": first}, self._viewers(channel))]

    def max_message_id(self, user_id):
        """register's max_message_id: the newest message the user has (received and not
        deleted), as the real server's newest UserMessage; -1 when none."""
        for m in reversed(self.messages.values()):
            if user_id in m.recipients:
                return m.id
        return -1

    def _messages(self, data):
        ids = _arg(data, "message_ids", list)
        if not ids:
            raise ActionError("message_ids must not be empty")
        found = []
        for mid in ids:
            message = self.messages.get(mid)
            if message is None:
                raise ActionError(f"no message {mid}")
            found.append(message)
        return found

    def _set_read(self, data, read):
        uid = self.user(_arg(data, "user_id", int))["user_id"]
        changed, seen = [], set()
        for message in sorted(self._messages(data), key=lambda m: m.id):
            if uid not in message.recipients or message.id in seen:
                continue
            seen.add(message.id)
            flags = message.flags.setdefault(uid, set())
            if ("read" in flags) == read:
                continue
            if read:
                flags.add("read")
            else:
                flags.discard("read")
            changed.append(message)
        op = "add" if read else "remove"
        event = {"type": "update_message_flags", "op": op, "operation": op, "flag": "read",
                 "messages": [m.id for m in changed], "all": False}
        if not read:
            details = {}
            for m in changed:
                flags = m.flags.get(uid, set())
                if m.type == "stream":
                    d = {"type": "stream", "stream_id": m.stream_id, "topic": m.topic,
                         "unmuted_stream_msg": True}
                else:
                    d = {"type": "private",
                         "user_ids": [u for u in m.participants if u != uid]}
                if "mentioned" in flags or "wildcard_mentioned" in flags:
                    d["mentioned"] = True
                details[str(m.id)] = d
            event["message_details"] = details
        return {"messages": event["messages"]}, [Push(event, To([uid]))]

    def mark_read(self, data):
        """update_message_flags add read with the ids that changed (the user's own messages
        that were unread) [that user]."""
        return self._set_read(data, True)

    def mark_unread(self, data):
        """update_message_flags remove read with message_details (unmuted_stream_msg is
        always true: muting a channel does not change what is unread) [that user]."""
        return self._set_read(data, False)

    def delete_message(self, data):
        """delete_message with the sorted ids [everyone who received them]; all of one
        conversation (one channel and topic, or one DM group).  Deleting a channel's oldest
        message then sends stream update first_message_id [who sees the channel]."""
        messages = self._messages(data)
        first = messages[0]
        key = (first.type, first.stream_id, first.topic.lower(), first.participants)
        if any((m.type, m.stream_id, m.topic.lower(), m.participants) != key for m in messages):
            raise ActionError("message_ids must all be of one conversation")
        ids = sorted({m.id for m in messages})
        recipients = set()
        for m in messages:
            recipients |= m.recipients
            self.messages.pop(m.id, None)
        event = {"type": "delete_message", "message_ids": ids, "message_type": first.type}
        pushes = [Push(event, To(recipients))]
        if first.type == "stream":
            event.update(stream_id=first.stream_id, topic=first.topic)
            channel = self.channels.get(first.stream_id)
            if channel is not None and channel["first_message_id"] in ids:
                pushes += self._first_message_changed(channel)
        return {}, pushes

    def move_messages(self, data):
        """update_message moving stream messages of one channel and topic to another topic
        and/or channel (propagate_mode change_all) [everyone who received them, each with
        their own flags], then stream update first_message_id for a channel whose oldest
        message changed.  Who received a message does not change with a move.  A move to where
        the messages already are is no change: success, no events."""
        messages = self._messages(data)
        first = messages[0]
        if any(m.type != "stream" or m.stream_id != first.stream_id
               or m.topic.lower() != first.topic.lower() for m in messages):
            raise ActionError("message_ids must be stream messages of one channel and topic")
        topic = _arg(data, "topic", str, None)
        if topic is not None:
            topic = topic.strip()
            if not topic:
                raise ActionError("topic must not be empty")
        stream_id = _arg(data, "stream_id", int, None)
        old_channel = self.channels.get(first.stream_id)
        if stream_id is not None:
            self.channel(stream_id)
        new_topic = topic is not None and topic != first.topic
        new_stream = stream_id is not None and stream_id != first.stream_id
        ids = sorted({m.id for m in messages})
        if not (new_topic or new_stream):
            return {"moved": []}, []   # nothing changes, nothing is sent
        acting = _arg(data, "user_id", int, BOT_OWNER_ID)
        event = {"type": "update_message", "user_id": acting, "edit_timestamp": int(time.time()),
                 "message_id": ids[0], "message_ids": ids, "stream_id": first.stream_id,
                 "stream_name": old_channel["name"] if old_channel else "",
                 "orig_subject": first.topic, "propagate_mode": "change_all",
                 "rendering_only": False}
        if new_topic:
            event["subject"] = topic
            event["topic_links"] = []
        if new_stream:
            event["new_stream_id"] = stream_id
        recipients = set()
        for m in messages:
            recipients |= m.recipients
            if new_topic:
                m.topic = topic
            if new_stream:
                m.stream_id = stream_id
        head = self.messages[ids[0]]
        pushes = [Push(event, To(recipients),
                       lambda q, e: dict(e, flags=head.user_flags(q.owner["user_id"])))]
        if new_stream:
            # the oldest message of either channel may have moved: stream update first_message_id
            for channel in (old_channel, self.channels[stream_id]):
                if channel is not None:
                    pushes += self._first_message_changed(channel)
        return {"moved": ids}, pushes

    def unread_msgs(self, user_id):
        """register's unread_msgs: lists sorted by their key, ids ascending."""
        streams, pms, huddles, mentions = {}, {}, {}, []
        count = 0
        for m in self.messages.values():
            if not m.is_unread(user_id):
                continue
            count += 1
            if m.type == "stream":
                streams.setdefault((m.stream_id, m.topic), []).append(m.id)
            elif len(m.participants) <= 2:
                others = [u for u in m.participants if u != user_id]
                pms.setdefault(others[0] if others else user_id, []).append(m.id)
            else:
                huddles.setdefault(",".join(map(str, m.participants)), []).append(m.id)
            flags = m.flags.get(user_id, ())
            if "mentioned" in flags or "wildcard_mentioned" in flags:
                mentions.append(m.id)
        return {
            "count": count,
            "pms": [{"other_user_id": k, "sender_id": k, "unread_message_ids": v}
                    for k, v in sorted(pms.items())],
            "streams": [{"stream_id": k[0], "topic": k[1], "unread_message_ids": v}
                        for k, v in sorted(streams.items())],
            "huddles": [{"user_ids_string": k, "unread_message_ids": v}
                        for k, v in sorted(huddles.items())],
            "mentions": mentions, "old_unreads_missing": False,
        }

    # -- user groups ------------------------------------------------------------

    def group(self, group_id, name="group_id"):
        group = self.groups.get(group_id)
        if group is None:
            raise ActionError(f"{name}: no group {group_id}")
        return group

    def group_dict(self, g):
        return {"id": g["id"], "name": g["name"], "description": g["description"],
                "members": sorted(g["members"]),
                "direct_subgroup_ids": sorted(g["direct_subgroup_ids"]),
                "is_system_group": False, "creator_id": g["creator_id"],
                "date_created": g["date_created"], "deactivated": False,
                "can_mention_group": 0}

    def _check_group_name(self, name, group=None):
        name = name.strip()
        if not name:
            raise ActionError("name must not be empty")
        for other in self.groups.values():
            if other is not group and other["name"].lower() == name.lower():
                raise ActionError(f"group {name} exists")
        return name

    def create_group(self, data):
        """user_group add [everyone].  can_mention_group is 0: no system groups are modelled."""
        name = self._check_group_name(_arg(data, "name", str))
        members = {self.user(u, "members")["user_id"] for u in _arg(data, "members", list, [])}
        subgroups = {self.group(g, "subgroups")["id"] for g in _arg(data, "subgroups", list, [])}
        gid = self.next_group_id
        self.next_group_id += 1
        group = {"id": gid, "name": name, "description": _arg(data, "description", str, ""),
                 "members": members, "direct_subgroup_ids": subgroups,
                 "creator_id": self.user(_arg(data, "creator_id", int, BOT_OWNER_ID),
                                         "creator_id")["user_id"],
                 "date_created": int(time.time())}
        self.groups[gid] = group
        return {"group_id": gid}, [Push({"type": "user_group", "op": "add",
                                         "group": self.group_dict(group)}, EVERYONE)]

    def update_group(self, data):
        """user_group update with the changed name and/or description [everyone]."""
        group = self.group(_arg(data, "group_id", int))
        changed = {}
        if "name" in data:
            changed["name"] = self._check_group_name(_arg(data, "name", str), group)
        if "description" in data:
            changed["description"] = _arg(data, "description", str)
        if not changed:
            raise ActionError("name or description required")
        group.update(changed)
        return {}, [Push({"type": "user_group", "op": "update", "group_id": group["id"],
                          "data": changed}, EVERYONE)]

    def _members(self, data, add):
        group = self.group(_arg(data, "group_id", int))
        ids = {self.user(u, "user_ids")["user_id"] for u in _arg(data, "user_ids", list)}
        changed = sorted(ids - group["members"] if add else ids & group["members"])
        if not changed:
            return {"user_ids": []}, []   # nothing changes, nothing is sent
        if add:
            group["members"] |= set(changed)
        else:
            group["members"] -= set(changed)
        op = "add_members" if add else "remove_members"
        return {"user_ids": changed}, [Push({"type": "user_group", "op": op,
                                             "group_id": group["id"], "user_ids": changed},
                                            EVERYONE)]

    def add_group_members(self, data):
        """user_group add_members with the ids that were not members yet [everyone]; none of
        them new: success, no event (and the same for the other membership actions)."""
        return self._members(data, True)

    def remove_group_members(self, data):
        return self._members(data, False)

    def _subgroups(self, data, add):
        group = self.group(_arg(data, "group_id", int))
        ids = {self.group(g, "subgroup_ids")["id"] for g in _arg(data, "subgroup_ids", list)}
        if group["id"] in ids:
            raise ActionError("a group cannot be its own subgroup")
        current = group["direct_subgroup_ids"]
        changed = sorted(ids - current if add else ids & current)
        if not changed:
            return {"subgroup_ids": []}, []   # nothing changes, nothing is sent
        if add:
            current |= set(changed)
        else:
            current -= set(changed)
        op = "add_subgroups" if add else "remove_subgroups"
        return {"subgroup_ids": changed}, [Push({"type": "user_group", "op": op,
                                                 "group_id": group["id"],
                                                 "direct_subgroup_ids": changed}, EVERYONE)]

    def add_subgroups(self, data):
        """user_group add_subgroups with the new ones [everyone].  Only a group as its own
        subgroup is refused: the model never expands memberships through subgroups, so a
        longer cycle harms nothing (the real server refuses it)."""
        return self._subgroups(data, True)

    def remove_subgroups(self, data):
        return self._subgroups(data, False)

    def delete_group(self, data):
        """user_group remove [everyone].  A group that is another's subgroup is first taken
        out of it with remove_subgroups (apply_event's remove does not touch other groups'
        direct_subgroup_ids), one event per parent, in id order."""
        group = self.group(_arg(data, "group_id", int))
        gid = group["id"]
        pushes = []
        for other in self.groups.values():
            if gid in other["direct_subgroup_ids"]:
                other["direct_subgroup_ids"].discard(gid)
                pushes.append(Push({"type": "user_group", "op": "remove_subgroups",
                                    "group_id": other["id"], "direct_subgroup_ids": [gid]},
                                   EVERYONE))
        del self.groups[gid]
        pushes.append(Push({"type": "user_group", "op": "remove", "group_id": gid}, EVERYONE))
        return {}, pushes

    # -- realm and user settings --------------------------------------------------

    def _check_realm_value(self, prop, value):
        if prop in ("name", "description", "icon_url"):
            if not isinstance(value, str) or (prop == "name" and not value.strip()):
                raise ActionError(f"{prop} must be a {'non-empty ' if prop == 'name' else ''}string")
        elif prop == "default_language":
            if value not in LANGUAGES:
                raise ActionError(f"default_language must be one of {', '.join(LANGUAGES)}")
        elif prop == "waiting_period_threshold":
            if type(value) is not int or value < 0:
                raise ActionError("waiting_period_threshold must be a non-negative integer")
        elif prop == "message_content_edit_limit_seconds":
            if value is not None and (type(value) is not int or value <= 0):
                raise ActionError("message_content_edit_limit_seconds must be a positive "
                                  "integer or null")
        elif prop == "allow_message_editing":
            _check_value(prop, bool, value)
        elif prop == "icon_source":
            if value not in ("G", "U"):
                raise ActionError('icon_source must be "G" or "U"')
        return value

    def update_realm(self, data):
        """realm update property value [everyone], for name, default_language and
        waiting_period_threshold."""
        prop = _arg(data, "property", str)
        if prop not in REALM_UPDATE_PROPERTIES:
            raise ActionError(f"property must be one of {', '.join(REALM_UPDATE_PROPERTIES)}")
        if "value" not in data:
            raise ActionError("value is required")
        self.realm[prop] = self._check_realm_value(prop, data["value"])
        return {}, [Push({"type": "realm", "op": "update", "property": prop,
                          "value": data["value"]}, EVERYONE)]

    def update_realm_dict(self, data):
        """realm update_dict property "default" [everyone], for description,
        message_content_edit_limit_seconds, allow_message_editing and the icon (icon_url and
        icon_source together)."""
        changes = _arg(data, "data", dict)
        if not changes:
            raise ActionError("data must not be empty")
        for prop, value in changes.items():
            if prop not in REALM_DICT_PROPERTIES:
                raise ActionError(f"data keys must be among {', '.join(REALM_DICT_PROPERTIES)}")
            self._check_realm_value(prop, value)
        if ("icon_url" in changes) != ("icon_source" in changes):
            raise ActionError("icon_url and icon_source go together")
        self.realm.update(changes)
        return {}, [Push({"type": "realm", "op": "update_dict", "property": "default",
                          "data": dict(changes)}, EVERYONE)]

    def settings_of(self, user_id):
        return dict(USER_SETTINGS_DEFAULTS, **self.user_settings.get(user_id, {}))

    def update_user_settings(self, data):
        """user_settings update property value (+ language_name for default_language) [that
        user]."""
        uid = self.user(_arg(data, "user_id", int))["user_id"]
        prop = _arg(data, "property", str)
        if prop not in USER_SETTINGS_DEFAULTS:
            raise ActionError(f"property must be one of {', '.join(USER_SETTINGS_DEFAULTS)}")
        if "value" not in data:
            raise ActionError("value is required")
        value = _same_type(prop, USER_SETTINGS_DEFAULTS[prop], data["value"])
        if prop == "default_language" and value not in LANGUAGES:
            raise ActionError(f"default_language must be one of {', '.join(LANGUAGES)}")
        if prop == "emojiset" and value not in EMOJISETS:
            raise ActionError(f"emojiset must be one of {', '.join(EMOJISETS)}")
        if prop == "color_scheme" and value not in (1, 2, 3):
            raise ActionError("color_scheme must be 1, 2 or 3")
        self.user_settings.setdefault(uid, {})[prop] = value
        event = {"type": "user_settings", "op": "update", "property": prop, "value": value}
        if prop == "default_language":
            event["language_name"] = LANGUAGES[value]
        return {}, [Push(event, To([uid]))]

    # -- muted users, user topics, emoji ---------------------------------------------

    def muted_list(self, user_id):
        return [{"id": uid, "timestamp": ts} for uid, ts in self.muted.get(user_id, {}).items()]

    def _mute(self, data, mute):
        uid = self.user(_arg(data, "user_id", int))["user_id"]
        other = self.user(_arg(data, "muted_user_id", int), "muted_user_id")["user_id"]
        if uid == other:
            raise ActionError("a user cannot mute themself")
        muted = self.muted.setdefault(uid, {})
        if (other in muted) == mute:
            return {}, []   # already so: nothing changes, nothing is sent
        if mute:
            muted[other] = int(time.time())
        else:
            del muted[other]
        return {}, [Push({"type": "muted_users", "muted_users": self.muted_list(uid)},
                         To([uid]))]

    def mute_user(self, data):
        """muted_users with the whole new list, oldest first [that user].  Muting a muted user
        (or unmuting one who is not) changes nothing and sends nothing."""
        return self._mute(data, True)

    def unmute_user(self, data):
        return self._mute(data, False)

    def topics_list(self, user_id):
        return [dict(t) for t in self.user_topics.get(user_id, {}).values()]

    def set_topic_visibility(self, data):
        """user_topic [that user].  Policy 0 takes the topic out of the list; any other policy
        puts it last (topics are matched case-insensitively, the new spelling is kept)."""
        uid = self.user(_arg(data, "user_id", int))["user_id"]
        sid = self.channel(_arg(data, "stream_id", int))["stream_id"]
        topic = _arg(data, "topic", str).strip()
        if not topic:
            raise ActionError("topic must not be empty")
        policy = _arg(data, "visibility_policy", int)
        if policy not in (0, 1, 2, 3):
            raise ActionError("visibility_policy must be 0, 1, 2 or 3")
        topics = self.user_topics.setdefault(uid, {})
        key = (sid, topic.lower())
        topics.pop(key, None)
        now = int(time.time())
        if policy:
            topics[key] = {"stream_id": sid, "topic_name": topic, "last_updated": now,
                           "visibility_policy": policy}
        return {}, [Push({"type": "user_topic", "stream_id": sid, "topic_name": topic,
                          "last_updated": now, "visibility_policy": policy}, To([uid]))]

    def emoji_dict(self):
        return {k: dict(v) for k, v in self.emoji.items()}

    def add_emoji(self, data):
        """realm_emoji update with the whole dict, deactivated ones included [everyone]."""
        name = _arg(data, "name", str).strip()
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise ActionError("name must be lowercase letters, digits, - and _")
        if any(e["name"] == name and not e["deactivated"] for e in self.emoji.values()):
            raise ActionError(f"emoji {name} exists")
        author = self.user(_arg(data, "author_id", int, BOT_OWNER_ID), "author_id")["user_id"]
        eid = str(self.next_emoji_id)
        self.next_emoji_id += 1
        self.emoji[eid] = {"id": eid, "name": name,
                           "source_url": f"/user_avatars/2/emoji/images/{eid}.png",
                           "still_url": None, "deactivated": False, "author_id": author}
        return {"emoji_id": eid}, [Push({"type": "realm_emoji", "op": "update",
                                         "realm_emoji": self.emoji_dict()}, EVERYONE)]

    def remove_emoji(self, data):
        """Deactivates the emoji (it stays in the dict); realm_emoji update [everyone]."""
        eid = data.get("emoji_id")
        eid = str(eid) if type(eid) in (int, str) else None
        emoji = self.emoji.get(eid)
        if emoji is None or emoji["deactivated"]:
            raise ActionError(f"no active emoji {data.get('emoji_id')}")
        emoji["deactivated"] = True
        return {}, [Push({"type": "realm_emoji", "op": "update",
                          "realm_emoji": self.emoji_dict()}, EVERYONE)]

    # -- register ---------------------------------------------------------------

    def state(self, user, want, include_subscribers, client_gravatar):
        """The model's part of register's state for `user`, key group by key group."""
        uid = user["user_id"]
        state = {}
        if want("realm"):
            state.update(realm_name=self.realm["name"],
                         realm_description=self.realm["description"],
                         realm_default_language=self.realm["default_language"],
                         realm_waiting_period_threshold=self.realm["waiting_period_threshold"],
                         realm_message_content_edit_limit_seconds=self.realm[
                             "message_content_edit_limit_seconds"],
                         realm_allow_message_editing=self.realm["allow_message_editing"],
                         realm_icon_url=self.realm["icon_url"],
                         realm_icon_source=self.realm["icon_source"])
        if want("realm_user"):
            active, inactive = [], []
            for u in self.users:
                (active if u["is_active"] else inactive).append(self.user_dict(u, client_gravatar))
            state["realm_users"] = active
            state["realm_non_active_users"] = inactive
        if want("realm_bot"):
            state["realm_bots"] = [self.bot_dict(self.user_by_id[b])
                                   for b in self.bots_by_owner.get(uid, [])]
        if want("subscription"):
            gone = self.unsubscribed.get(uid, set())
            subscribed, unsubscribed, never = [], [], []
            for c in self.channels.values():
                if uid in c["subscribers"]:
                    subscribed.append(self.sub_dict(uid, c, include_subscribers))
                elif c["stream_id"] in gone:
                    unsubscribed.append(self.sub_dict(uid, c, include_subscribers))
                elif not c["invite_only"]:
                    never.append(self.channel_dict(c, include_subscribers))
            state.update(subscriptions=subscribed, unsubscribed=unsubscribed,
                         never_subscribed=never)
        if want("stream"):
            state["streams"] = [self.channel_dict(c, False) for c in self.channels.values()
                                if self.can_see(uid, c)]
        if want("message") and want("update_message_flags"):
            state["unread_msgs"] = self.unread_msgs(uid)
        if want("user_group"):
            state["realm_user_groups"] = [self.group_dict(g) for g in self.groups.values()]
        if want("user_settings"):
            state["user_settings"] = self.settings_of(uid)
        if want("muted_users"):
            state["muted_users"] = self.muted_list(uid)
        if want("user_topic"):
            state["user_topics"] = self.topics_list(uid)
        if want("realm_emoji"):
            state["realm_emoji"] = self.emoji_dict()
        return state


def render(text):
    """Markdown rendering, as far as the dev server goes: one escaped paragraph."""
    return "<p>" + html.escape(text, quote=False) + "</p>" if text else ""


# The actions POST /test/action runs (send is realm.py's, as it renders and fans out itself).
ACTIONS = (
    "create_user", "update_user", "deactivate_user", "reactivate_user",
    "create_channel", "update_channel", "delete_channel", "subscribe", "unsubscribe",
    "update_subscription", "mark_read", "mark_unread", "delete_message", "move_messages",
    "create_group", "update_group", "add_group_members", "remove_group_members",
    "add_subgroups", "remove_subgroups", "delete_group", "update_realm", "update_realm_dict",
    "update_user_settings", "mute_user", "unmute_user", "set_topic_visibility", "add_emoji",
    "remove_emoji",
)
