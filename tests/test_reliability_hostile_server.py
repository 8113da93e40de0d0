"""A hostile OpenAI-compatible server (issue 25): one that trickles, floods, ignores the token
limit and answers malformed JSON, SSE or shapes. ``OpenAIGenerator(timeout=T)`` bounds the
whole call, caps the reply's bytes and pieces, and every failure is a ``GeneratorError``
naming the endpoint. The server is a local ``http.server`` on 127.0.0.1 started by the test;
every loop it runs is bounded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared_core.errors import GeneratorError, InputError
from shared_core.models.openai_generator import OpenAIGenerator

#: Seconds each hostile route keeps going at most (its loops are bounded by this too).
RUN_FOR = 30.0
TIMEOUT = 1.5
#: A call must end by the deadline plus this slack (thread start, a busy 2-core machine).
SLACK = 6.0


def _chunk(text: str) -> bytes:
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    event["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return f"data: {json.dumps(event)}\n\n".encode()


def _whole(text: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


class Hostile(BaseHTTPRequestHandler):
    """``POST /<route>/v1/chat/completions``: the route picks the misbehaviour."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, body: bytes, kind: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

    def _trickle(self, pieces: Iterator[bytes], pause: float) -> None:
        end = time.monotonic() + RUN_FOR
        try:
            for piece in pieces:
                if time.monotonic() > end:
                    return
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client hung up: what a bounded client does
            return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        route = self.path.split("/")[1]
        if route == "slow-stream":  # one SSE chunk every 0.5 s, for up to RUN_FOR s
            self._start_stream()
            self._trickle((_chunk(f"w{i} ") for i in range(int(RUN_FOR / 0.5))), 0.5)
        elif route == "chatty-stream":  # ignores max_tokens: 200 pieces at once
            self._start_stream()
            self._trickle(iter([b"".join(_chunk(f"w{i} ") for i in range(200))]), 0)
        elif route == "slow-body":  # a whole reply, one byte every 0.2 s
            body = _whole("hello " * 50)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._trickle((body[i : i + 1] for i in range(len(body))), 0.2)
        elif route == "flood":  # 1 MiB blocks of a JSON string, up to 300 MiB, no length
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            block = b"a" * (1 << 20)
            self._trickle(iter([b'{"id": "', *([block] * 300)]), 0)
        elif route == "long-reply":  # a valid reply far over max_new_tokens
            self._send(_whole("word " * 20_000))
        elif route == "bad-json":
            self._send(b'{"id": "x", "choices": [')
        elif route == "bad-sse":
            self._start_stream()
            self._trickle(iter([_chunk("ok "), b"data: {not json\n\n"]), 0)
        elif route == "wrong-shape":
            self._send(json.dumps({"choices": "abc", "usage": 7}).encode())
        elif route == "wrong-content":
            self._send(json.dumps({"choices": [{"message": {"content": {"a": 1}}}]}).encode())
        else:
            self._send(_whole("fine"))


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def generator(root: str, route: str, **kwargs: object) -> OpenAIGenerator:
    options = {"timeout": TIMEOUT, "max_retries": 0, **kwargs}
    return OpenAIGenerator("m", base_url=f"{root}/{route}/v1", api_key="k", **options)  # type: ignore[arg-type]


def test_a_stream_trickling_a_chunk_every_half_second_ends_at_the_timeout(hostile):
    gen = generator(hostile, "slow-stream")
    started = time.monotonic()
    pieces: list[str] = []
    with pytest.raises(GeneratorError, match=r"slow-stream/v1.*did not answer within 1\.5 s"):
        for piece in gen.stream("hi", max_new_tokens=1000):
            pieces.append(piece)
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert len(pieces) < 10  # about 3 arrived before the deadline, never the 60 sent


def test_a_stream_stops_at_max_new_tokens_whatever_the_server_sends(hostile):
    pieces = list(generator(hostile, "chatty-stream").stream("hi", max_new_tokens=8))
    assert len(pieces) == 8


def test_a_body_trickled_byte_by_byte_ends_at_the_timeout(hostile):
    started = time.monotonic()
    with pytest.raises(GeneratorError, match=r"slow-body/v1.*did not answer within 1\.5 s"):
        generator(hostile, "slow-body").generate("hi", max_new_tokens=8)
    assert time.monotonic() - started < TIMEOUT + SLACK


def test_a_flood_is_cut_at_the_byte_cap(hostile):
    gen = generator(hostile, "flood", timeout=60.0, max_reply_bytes=2 * 1024 * 1024)
    with pytest.raises(GeneratorError, match=r"flood/v1.*over max_reply_bytes=2,097,152"):
        gen.generate("hi", max_new_tokens=8)


def test_a_whole_reply_is_cut_at_the_token_limit(hostile):
    reply = generator(hostile, "long-reply").generate("hi", max_new_tokens=8)
    assert len(reply.text) <= 8 * 32
    assert reply.finish_reason == "length"


@pytest.mark.parametrize(
    ("route", "stream"),
    [("bad-json", False), ("bad-sse", True), ("wrong-shape", False), ("wrong-content", False)],
)
def test_a_malformed_reply_is_a_generator_error_naming_the_endpoint(hostile, route, stream):
    gen = generator(hostile, route)
    with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:\d+/{route}/v1"):
        if stream:
            list(gen.stream("hi", max_new_tokens=8))
        else:
            gen.generate("hi", max_new_tokens=8)


def test_a_sane_reply_still_works(hostile):
    assert generator(hostile, "fine").generate("hi", max_new_tokens=8).text == "fine"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", "5"),
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("timeout", True),
        ("max_new_tokens_cap", 0),
        ("max_reply_bytes", 0),
        ("max_retries", -1),
    ],
)
def test_bad_generator_options_are_refused_at_construction(option, value):
    with pytest.raises(InputError, match=option):
        OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", **{option: value})  # type: ignore[arg-type]
