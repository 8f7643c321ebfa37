#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/json/*, fuzz/corpus/reply/* and fuzz/corpus/h1/* (our own
texts, in the shapes of Zulip's register, events and error replies). Run it from the checkout after changing
it; the seeds are committed, so nothing at build or test time runs this."""
import base64
import gzip
import json
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
QID = "5d1c7e0a-93b4-4f1e-a2c8-0b7d6e3f9a21"


def message_event(i, content="Hello from the fuzz corpus", extra=None):
    ev = {
        "id": i, "type": "message", "flags": ["read", "mentioned"],
        "message": {
            "id": 4000 + i, "sender_id": 11, "sender_full_name": "Alice",
            "sender_email": "alice@example.com", "sender_realm_str": "example",
            "avatar_url": None, "client": "lua-zulip", "content": content,
            "content_type": "text/x-markdown", "display_recipient": "Denmark",
            "recipient_id": 20, "stream_id": 1, "subject": "castle", "topic_links": [],
            "submessages": [], "reactions": [], "timestamp": 1700000000 + i, "is_me_message": False,
            "type": "stream",
        },
    }
    if extra:
        ev["message"].update(extra)
    return ev


SUCCESS = {"result": "success", "msg": ""}
ME = {"result": "success", "msg": "", "user_id": 10, "id": 10, "email": "bot@example.com",
      "full_name": "Echo Bot", "is_bot": True, "is_admin": False, "role": 400, "avatar_url": None}
REGISTER = {
    "result": "success", "msg": "", "queue_id": QID, "last_event_id": -1,
    "zulip_version": "10.0", "zulip_feature_level": 330, "zulip_merge_base": "10.0",
    "event_queue_longpoll_timeout_seconds": 90, "max_message_id": 3999,
    "realm_emoji": {"7": {"id": "7", "name": "tick", "source_url": "/emoji/7.png",
                          "deactivated": False, "author_id": 11}},
}
EVENTS = {"result": "success", "msg": "", "queue_id": QID,
          "events": [message_event(4), {"id": 5, "type": "heartbeat"}]}
ERRORS = {
    "bad_queue": {"result": "error", "code": "BAD_EVENT_QUEUE_ID", "queue_id": QID,
                  "msg": "Bad event queue ID: " + QID},
    "rate_limit": {"result": "error", "code": "RATE_LIMIT_HIT", "msg": "API usage exceeded rate limit",
                   "retry-after": 2.25},
    "unauthorized": {"result": "error", "code": "UNAUTHORIZED", "msg": "Invalid API key"},
    "missing": {"result": "error", "code": "REQUEST_VARIABLE_MISSING", "var_name": "content",
                "msg": "Missing 'content' argument"},
    "deactivated": {"result": "error", "code": "USER_DEACTIVATED", "msg": "Account is deactivated"},
}


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def js(v, **kw):
    return json.dumps(v, **kw)


def json_seeds():
    write("json", "success", js(SUCCESS))
    write("json", "users_me", js(ME, indent=2))
    write("json", "register", js(REGISTER, indent=1))
    write("json", "events", js(EVENTS))
    for k, v in ERRORS.items():
        write("json", "error_" + k, js(v, indent=2))
    write("json", "heartbeat", '{"result":"success","msg":"","events":[{"id":0,"type":"heartbeat"}]}')
    write("json", "escapes", '{"content":"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t",'
                             '"lone":"\\ud800x\\udc00","raw":"\u00e9\u4e2d\U0001F600"}')
    write("json", "numbers", "[0,-0,1,-1,0.5,-0.0,1e3,1E-7,1.5e+300,2.2250738585072014e-308,"
                             "4.9e-324,1e999,-1e999,9007199254740993,9223372036854775807,"
                             "-9223372036854775808,9223372036854775808,18446744073709551616,"
                             "0.1,0.30000000000000004,123456789012345678901234567890e-10]")
    write("json", "literals", ' [ true , false , null , { } , [ ] , "" ] \r\n\t')
    write("json", "nested_999", "[" * 999 + "]" * 999)
    write("json", "nested_1001", "[" * 1001 + "]" * 1001)
    write("json", "nested_objects", '{"a":' * 200 + "1" + "}" * 200)
    write("json", "duplicate_keys", '{"id":1,"id":2,"id":"three"}')
    big = {"result": "success", "msg": "", "queue_id": QID,
           "events": [message_event(i, "m%d" % i) for i in range(1, 30)]}
    write("json", "events_large", js(big))   # > 4096 bytes: the decoder's string caches
    long_escaped = {"content": ("line\\n\u00e9\"" * 400)}
    write("json", "long_escaped", js(long_escaped))
    for name, text in [("trailing_comma", '{"a":1,}'), ("truncated", '{"events":[{"id":1'),
                       ("nan", '[NaN]'), ("leading_zero", '[01]'), ("bare_word", 'success'),
                       ("control_char", '"a\x01b"'), ("bad_escape", '"\\x"'), ("empty", ''),
                       ("two_values", '{} {}'), ("bad_unicode", '"\\u12G4"')]:
        write("json", "bad_" + name, text)


def http(status, reason, body=b"", headers=None, content_length=True, version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["%s %s %s" % (version, status, reason), "Server: fuzz-seed", "Vary: Accept-Encoding"]
    for h in headers or []:
        lines.append(h)
    if content_length:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def reply(name, mode, data):
    write("reply", name, bytes([mode]) + data)
    # h1_fuzz reads byte 0 differently (max_body and how the bytes are cut): vary it per seed
    write("h1", name, bytes([(sum(name.encode()) * 7 + mode) & 0xFF]) + data)


# {"result":"success","msg":"","email":"bot@example.com","note":"decoded from brotli"}, made by
# `brotli -c` once (Python's standard library has no brotli)
BROTLI_ME = base64.b64decode("H1MA4IzUYs0Z7oxQyQnylvplJUj5MbMxG5rUYelzyqEG4IG0liYHv9/hvSGVXiOUDwp5Zd0OSalF7Je7"
                             "c+COi6it7HOqrzgycxg=")


def h1_seeds():
    """Seeds only the parser target takes: codings and framings the dev server never sends."""
    ct = "Content-Type: application/json"
    write("h1", "brotli", b"\x02" + http(200, "OK", BROTLI_ME, [ct, "Content-Encoding: br"]))
    write("h1", "deflate", b"\x03" + http(200, "OK", zlib.compress(js(ME).encode()),
                                         [ct, "Content-Encoding: deflate"]))
    gz = gzip.compress(js(REGISTER).encode(), mtime=0)
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(gz[i:i + 7]), gz[i:i + 7]) for i in range(0, len(gz), 7))
    write("h1", "chunked_gzip_trailers", b"\x41" + http(200, "OK", body + b"0\r\nX-Trailer: 1\r\n\r\n",
                                                       [ct, "Transfer-Encoding: chunked",
                                                        "Content-Encoding: gzip"], False))
    write("h1", "two_replies", b"\x05" + http(200, "OK", js(ME), [ct]) + http(204, "No Content", b"", [], False))
    write("h1", "interim_103", b"\x06" + b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
          + http(429, "Too Many Requests", b"", ["Retry-After: 0.5", "Connection: close"]))
    write("h1", "keep_alive_10", b"\x07" + http(200, "OK", js(ME), [ct, "Connection: keep-alive"],
                                               version="HTTP/1.0"))
    write("h1", "both_framings", b"\x09" + http(200, "OK", b"2\r\n{}\r\n0\r\n\r\n",
                                               ["Transfer-Encoding: chunked", "Content-Length: 3"], False))


def reply_seeds():
    ct = "Content-Type: application/json"
    reply("me_200", 0, http(200, "OK", js(ME), [ct]))
    reply("register_200", 1, http(200, "OK", js(REGISTER), [ct]))
    reply("register_gzip", 1, http(200, "OK", gzip.compress(js(REGISTER).encode(), mtime=0),
                                   [ct, "Content-Encoding: gzip"]))
    chunked = js(EVENTS).encode()
    body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, chunked[:10], len(chunked) - 10, chunked[10:])
    reply("events_chunked", 2, http(200, "OK", body, [ct, "Transfer-Encoding: chunked"], False))
    reply("events_200", 2, http(200, "OK", js(EVENTS), [ct]))
    reply("events_debug", 2 | 8, http(200, "OK", js(EVENTS), [ct, "X-Echo: Authorization: Basic abc"]))
    reply("events_bad_queue", 2, http(400, "Bad Request", js(ERRORS["bad_queue"]), [ct]))
    reply("rate_limit_header", 2, http(429, "Too Many Requests", js(ERRORS["rate_limit"]),
                                       [ct, "Retry-After: 2"]))
    reply("rate_limit_date", 0, http(429, "Too Many Requests", "",
                                     ["Retry-After: Wed, 21 Oct 2037 07:28:00 GMT"]))
    reply("unauthorized", 0, http(401, "Unauthorized", js(ERRORS["unauthorized"]),
                                  [ct, 'WWW-Authenticate: Basic realm="zulip"']))
    reply("html_502", 2, http(502, "Bad Gateway", "<html><body><h1>502 Bad Gateway</h1></body></html>",
                              ["Content-Type: text/html"]))
    reply("redirect_302", 0, http(302, "Found", "", ["Location: http://127.0.0.1:1/elsewhere"]))
    reply("status_500", 3, http(500, "Internal Server Error",
                                js({"result": "error", "msg": "Internal server error"}), [ct]))
    reply("continue_then_200", 3, b"HTTP/1.1 100 Continue\r\n\r\n" +
          http(200, "OK", js({"result": "success", "msg": "", "id": 42}), [ct]))
    reply("too_large", 1 | 4, http(200, "OK", js({"result": "success", "msg": "", "x": "y" * 2000}), [ct]))
    reply("short_body", 2, http(200, "OK", js(EVENTS), [ct, "Content-Length: 99999"], False))
    reply("negative_length", 0, http(200, "OK", js(ME), [ct, "Content-Length: -5"], False))
    reply("http10_no_length", 0, http(200, "OK", js(ME), [ct], False, "HTTP/1.0"))
    reply("http09", 0, js(ME).encode())
    reply("not_json", 2, http(200, "OK", "<html>maintenance</html>", [ct]))
    reply("deep_json", 0, http(200, "OK", "[" * 1001 + "]" * 1001, [ct]))
    reply("empty_200", 1, http(200, "OK", "", [ct]))
    reply("bad_gzip", 0, http(200, "OK", b"\x1f\x8b\x08\x00garbage", [ct, "Content-Encoding: gzip"]))
    reply("events_not_list", 2, http(200, "OK", js({"result": "success", "msg": "", "events": {"a": 1}}), [ct]))
    reply("event_without_id", 2, http(200, "OK", js({"result": "success", "msg": "",
                                                     "events": [{"type": "heartbeat"}, 7, None]}), [ct]))
    reply("register_no_queue", 1, http(200, "OK", js({"result": "success", "msg": "", "queue_id": 5,
                                                      "last_event_id": 1.5}), [ct]))
    reply("error_shapes", 0, http(400, "Bad Request", js({"result": "error", "code": 7, "msg": {"x": 1},
                                                          "retry-after": -3, "queue_id": []}), [ct]))
    reply("folded_header", 0, b"HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nContent-Length: 2\r\n\r\n{}")
    reply("huge_status", 0, b"HTTP/1.1 999999 Weird\r\nContent-Length: 2\r\n\r\n{}")


json_seeds()
reply_seeds()
h1_seeds()
