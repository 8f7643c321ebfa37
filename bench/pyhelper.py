"""Python side of the end-to-end benchmarks (bench/e2e.lua); standard library only.

  pyhelper.py poll PORT N       a plain Python events client (http.client keep-alive + json):
                                N rounds of "push one message, poll it"; prints the mean and
                                median CPU microseconds per poll (getrusage around the poll only)
  pyhelper.py push PORT N SECS  pushes N messages to Denmark, one every SECS seconds (the
                                latency row's sender, in a process of its own)
"""
import base64
import http.client
import json
import resource
import sys
import time

BOT = ("bot@example.com", "botkey0123456789ABCDEFGHIJKLMNOP")


def control(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status != 200:
        raise SystemExit(f"{path}: HTTP {reply.status}: {data[:200]!r}")
    return json.loads(data)


def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def poll(port, rounds):
    auth = "Basic " + base64.b64encode(":".join(BOT).encode()).decode()
    api = http.client.HTTPConnection("127.0.0.1", port)
    ctl = http.client.HTTPConnection("127.0.0.1", port)

    def call(method, path, body=None):
        headers = {"Authorization": auth}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        api.request(method, path, body, headers)
        reply = api.getresponse()
        data = json.loads(reply.read())
        if reply.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {reply.status}: {data}")
        return data

    state = call("POST", "/api/v1/register", 'event_types=["message"]')
    queue_id, last = state["queue_id"], state["last_event_id"]
    samples = []
    for i in range(rounds + 50):   # the first 50 warm up
        control(ctl, "/test/messages", {"count": 1})
        c0 = cpu()
        reply = call("GET", f"/api/v1/events?queue_id={queue_id}&last_event_id={last}")
        events = reply["events"]
        if events:
            last = events[-1]["id"]
        c1 = cpu()
        if i >= 50:
            samples.append(c1 - c0)
    call("DELETE", f"/api/v1/events?queue_id={queue_id}")
    samples.sort()
    print(f"{1e6 * sum(samples) / len(samples):.1f} {1e6 * samples[len(samples) // 2]:.1f}")


def push(port, count, interval):
    ctl = http.client.HTTPConnection("127.0.0.1", port)
    try:
        for _ in range(count):
            control(ctl, "/test/messages", {"count": 1})
            time.sleep(interval)
    except OSError:
        pass   # the benchmark has what it needs and stopped the server


if __name__ == "__main__":
    if sys.argv[1] == "poll":
        poll(int(sys.argv[2]), int(sys.argv[3]))
    else:
        push(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
