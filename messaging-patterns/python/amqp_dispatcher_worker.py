"""The amqp-dispatcher worker: runs one Python consumer class for the dispatcher.

The dispatcher starts one of these per consumer instance and talks to it over its standard
input and output, one JSON object per line (docs/dispatcher-worker-protocol.md). The
consumer class keeps the original amqp-dispatcher's interface:

    class Consumer:
        def consume(self, amqp, msg): ...       # amqp.ack(), amqp.publish(...), msg.body
        def shutdown(self, exception=None): ...

Usage (the dispatcher runs it with `python3 -c`, so the standard library is all it needs):

    worker [--startup module:function] module:Class
    worker --check [--startup module:function] module:Class [module:Class ...]

Python 3 only.
"""

import base64
import importlib
import json
import os
import sys
import traceback


class PublishError(Exception):
    """The dispatcher could not publish a message (the broker refused it, or no exchange)."""


class SettleError(Exception):
    """The message was settled already (acked, nacked or rejected)."""


def load(spec):
    """The object `name` of module `module`, for a `module:name` spec."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError("%r is not of the form module:name" % spec)
    return getattr(importlib.import_module(module_name), name)


def to_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8")


def from_wire(value):
    """Header values: {"$bytes": base64} objects become bytes; tables and arrays recurse."""
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value


def to_wire(value):
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


class Link:
    """The line protocol over the process's original stdin and stdout."""

    def __init__(self, inp, out):
        self.inp = inp
        self.out = out

    def send(self, obj):
        self.out.write(json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n")
        self.out.flush()

    def receive(self):
        line = self.inp.readline()
        if not line:
            return None
        return json.loads(line)


class Message:
    """A delivered message, as the original daemon's consumers see it."""

    def __init__(self, line):
        self.body = base64.b64decode(line.get("body", ""))
        self.properties = from_wire(line.get("properties", {}))
        self.delivery_info = line.get("delivery_info", {})

    def __len__(self):
        return len(self.body)

    def __bool__(self):
        return True


class AMQPProxy:
    """What a consumer settles its message and publishes with."""

    def __init__(self, link, message_id):
        self._link = link
        self._id = message_id
        self._settled = False

    @property
    def has_responded_to_message(self):
        return self._settled

    def _settle(self, kind, requeue=None):
        if self._settled:
            raise SettleError("Already responded to message!")
        self._settled = True
        line = {"type": kind, "id": self._id}
        if requeue is not None:
            line["requeue"] = bool(requeue)
        self._link.send(line)

    def ack(self):
        self._settle("ack")

    def nack(self, requeue=True):
        self._settle("nack", requeue)

    def reject(self, requeue=True):
        self._settle("reject", requeue)

    def publish(self, exchange, routing_key, headers, body, properties=None):
        """Publishes and waits until the broker has the message; PublishError if not."""
        self._link.send({
            "type": "publish",
            "id": self._id,
            "exchange": exchange,
            "routing_key": routing_key,
            "headers": to_wire(headers or {}),
            "properties": to_wire(properties or {}),
            "body": base64.b64encode(to_bytes(body)).decode("ascii"),
        })
        reply = self._link.receive()
        if reply is None:
            raise PublishError("the dispatcher went away")
        if reply.get("type") != "published":
            raise PublishError(reply.get("error", "publish failed"))


def describe(exception):
    return "%s: %s" % (type(exception).__name__, exception)


def handle(link, klass, instance, line):
    """Runs one message; returns the instance to use next (a fresh one after a failure)."""
    amqp = AMQPProxy(link, line["id"])
    try:
        instance.consume(amqp, Message(line))
    except Exception as exception:
        traceback.print_exc(file=sys.stderr)
        link.send({"type": "failed", "id": line["id"], "error": describe(exception)})
        try:
            instance.shutdown(exception)
        except Exception:
            traceback.print_exc(file=sys.stderr)
        return klass()
    link.send({"type": "done", "id": line["id"]})
    return instance


def serve(link, spec, startup):
    if startup:
        load(startup)()
    klass = load(spec)
    instance = klass()
    link.send({"type": "ready", "pid": os.getpid()})
    while True:
        line = link.receive()
        if line is None or line.get("type") == "shutdown":
            instance.shutdown(None)
            return
        if line.get("type") == "message":
            instance = handle(link, klass, instance, line)


def check(specs, startup):
    """Imports each class (and the startup handler) as a run would; True when all load."""
    ok = True
    for spec in ([startup] if startup else []) + specs:
        try:
            target = load(spec)
            missing = [m for m in ("consume", "shutdown") if spec != startup
                       and not callable(getattr(target, m, None))]
            if missing:
                raise AttributeError("no %s method" % " or ".join(missing))
            if spec == startup and not callable(target):
                raise TypeError("not callable")
        except Exception as exception:
            print("[%s] %s" % (spec, describe(exception)), file=sys.stderr)
            ok = False
    return ok


def protocol_link():
    """Keeps the original stdin/stdout for the protocol; what the consumer prints, at the
    Python or the C level, goes to stderr instead, and it reads an empty stdin."""
    out = os.fdopen(os.dup(1), "wb")
    inp = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)
    return Link(inp, out)


def main(argv):
    args = list(argv)
    checking = "--check" in args
    if checking:
        args.remove("--check")
    startup = None
    if "--startup" in args:
        at = args.index("--startup")
        startup = args[at + 1] if at + 1 < len(args) else None
        del args[at:at + 2]
    if "" not in sys.path:
        sys.path.insert(0, "")
    if checking:
        return 0 if check(args, startup) else 1
    if len(args) != 1:
        print("usage: worker [--startup module:function] module:Class", file=sys.stderr)
        return 2
    link = protocol_link()
    try:
        serve(link, args[0], startup)
    except Exception as exception:
        traceback.print_exc(file=sys.stderr)
        link.send({"type": "fatal", "error": describe(exception)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
