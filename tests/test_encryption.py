"""dfcore.contrib.encryption: the AES-GCM codec alone, and end to end on a real server."""

from __future__ import annotations

import base64
import sys
from typing import Any

import nats
import orjson
import pytest
from nats.js.errors import NotFoundError

from dfcore import App, CodecKeyError, CodecUnavailableError, ConfigurationError, PayloadError
from dfcore.contrib.encryption import AESGCMCodec, DecryptionError
from dfcore.core._codec import safe_decode
from dfcore.core._config import load_codec
from dfcore.jetstream._naming import Layout

from .workerkit import WorkerThread, wait_until

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
MARKER = "Alice-Secret-7781"
JSON = orjson.dumps({"t": "WorkflowStarted", "args": [MARKER]})


# --- the codec alone --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 24, 32])
def test_round_trip_with_raw_and_base64_keys(size: int) -> None:
    raw = bytes(range(size))
    for key in (raw, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        codec = AESGCMCodec(key)
        encoded = codec.encode(JSON)
        assert MARKER.encode() not in encoded
        assert codec.decode(encoded) == JSON


def test_wire_format_is_versioned_and_names_the_key() -> None:
    codec = AESGCMCodec(KEY)
    encoded = codec.encode(JSON)
    assert encoded[:4] == b"DFE\x01"
    assert encoded[4:8].hex() == codec.key_id
    assert len(encoded) == len(JSON) + 36  # header 8, nonce 12, tag 16
    assert codec.decode(codec.encode(b"")) == b""


def test_every_message_gets_a_fresh_nonce() -> None:
    codec = AESGCMCodec(KEY)
    encoded = [codec.encode(JSON) for _ in range(50)]
    assert len({e[8:20] for e in encoded}) == 50
    assert len(set(encoded)) == 50


@pytest.mark.parametrize("position", [3, 5, 10, 25, -1])
def test_a_tampered_byte_fails(position: int) -> None:
    codec = AESGCMCodec(KEY)
    encoded = bytearray(codec.encode(JSON))
    encoded[position] ^= 0x01
    # A changed key id names a key this codec does not have; anything else fails authentication.
    expected = CodecKeyError if 4 <= position < 8 else DecryptionError
    with pytest.raises(expected):
        codec.decode(bytes(encoded))


def test_authentication_failure_is_a_payload_error_naming_the_message() -> None:
    codec = AESGCMCodec(KEY)
    encoded = bytearray(codec.encode(JSON))
    encoded[30] ^= 0xFF
    with pytest.raises(DecryptionError) as info:
        safe_decode(codec, bytes(encoded), "history message 7")
    assert isinstance(info.value, PayloadError) and not isinstance(info.value, CodecKeyError)
    message = str(info.value)
    assert message.startswith("cannot decode history message 7: authentication failed")
    assert "corrupted or tampered with" in message


def test_data_not_in_the_format_says_what_it_is() -> None:
    codec = AESGCMCodec(KEY)
    with pytest.raises(DecryptionError, match=r"plain JSON, not encrypted.*DF_CODEC"):
        safe_decode(codec, JSON, "activity task")
    with pytest.raises(DecryptionError, match="does not start with b'DFE'"):
        codec.decode(b"\x00garbage")
    with pytest.raises(DecryptionError, match="truncated"):
        codec.decode(codec.encode(JSON)[:30])
    with pytest.raises(CodecUnavailableError, match=r"version 2 .* reads version 1"):
        codec.decode(b"DFE\x02" + codec.encode(JSON)[4:])


def test_rotation_reads_old_keys_and_writes_the_new_one() -> None:
    before = AESGCMCodec(OTHER_KEY)
    old_message = before.encode(JSON)
    after = AESGCMCodec(KEY, old_keys=[OTHER_KEY])
    assert after.decode(old_message) == JSON
    assert after.encode(JSON)[4:8].hex() == after.key_id == AESGCMCodec(KEY).key_id
    assert after.key_ids == (after.key_id, before.key_id)
    with pytest.raises(CodecKeyError):
        before.decode(after.encode(JSON))  # a process not yet given the new key


def test_unknown_key_error_names_both_key_ids_and_what_to_do() -> None:
    writer, reader = AESGCMCodec(OTHER_KEY), AESGCMCodec(KEY)
    with pytest.raises(CodecKeyError) as info:
        safe_decode(reader, writer.encode(JSON), "the outcome of workflow 'order-42'")
    error = info.value
    assert (error.key_id, error.known_key_ids) == (writer.key_id, (reader.key_id,))
    assert error.what == "the outcome of workflow 'order-42'"
    assert str(error) == (
        f"cannot decrypt the outcome of workflow 'order-42': it was encrypted with key id "
        f"{writer.key_id}, and this process only has key ids {reader.key_id}; every client and "
        "worker must share the key (DF_ENCRYPTION_KEY); keep old keys in old_keys "
        "(DF_ENCRYPTION_OLD_KEYS) during a rotation"
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"short", "key is 5 bytes long; an AES key must be 16, 24 or 32 bytes"),
        (base64.b64encode(b"x" * 20).decode(), "key is 20 bytes long once base64-decoded"),
        ("not base64 at all!", "key is not valid base64 .*generate one with: python -c"),
        ("", "key is empty"),
        (bytes(range(32)).hex(), "key looks like a hex string; the key must be base64"),
        (12345, "key must be bytes or a base64 string, not int"),
    ],
)
def test_bad_keys_get_clear_errors(key: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AESGCMCodec(key)


def test_a_bad_old_key_is_named_by_position() -> None:
    with pytest.raises(ConfigurationError, match=r"old_keys\[1\] is 3 bytes long"):
        AESGCMCodec(KEY, old_keys=[OTHER_KEY, b"abc"])


def test_keys_never_appear_in_repr_or_errors() -> None:
    codec = AESGCMCodec(KEY, old_keys=[OTHER_KEY])
    text = repr(codec)
    assert text == f"AESGCMCodec(key_id={codec.key_id!r}, old_key_ids=[{codec.key_ids[1]!r}])"
    assert KEY not in text and OTHER_KEY not in text and bytes(range(32)).hex() not in text
    secret = KEY[:-4] + "@@@="  # one typo away from a real key
    with pytest.raises(ConfigurationError) as info:
        AESGCMCodec(secret)
    assert KEY[:-4] not in str(info.value)
    with pytest.raises(CodecKeyError) as key_error:
        AESGCMCodec(OTHER_KEY).decode(codec.encode(JSON))
    assert KEY not in str(key_error.value) and OTHER_KEY not in str(key_error.value)


def test_generate_key() -> None:
    keys = {AESGCMCodec.generate_key() for _ in range(5)}
    assert len(keys) == 5
    assert all(len(base64.b64decode(key)) == 32 for key in keys)
    assert len(base64.b64decode(AESGCMCodec.generate_key(16))) == 16
    with pytest.raises(ConfigurationError, match="16, 24 or 32 bytes, not 20"):
        AESGCMCodec.generate_key(20)


def test_key_and_old_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DF_ENCRYPTION_KEY", KEY)
    monkeypatch.setenv("DF_ENCRYPTION_OLD_KEYS", f" {OTHER_KEY} ,,")
    codec = AESGCMCodec()
    assert codec.key_ids == (AESGCMCodec(KEY).key_id, AESGCMCodec(OTHER_KEY).key_id)
    assert AESGCMCodec(KEY).key_ids == (codec.key_id,)  # an explicit key ignores the env
    monkeypatch.setenv("DF_ENCRYPTION_OLD_KEYS", f"{OTHER_KEY},nope!")
    with pytest.raises(ConfigurationError, match="DF_ENCRYPTION_OLD_KEYS item 2 is not valid"):
        AESGCMCodec()


def test_the_codec_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "dfcore.contrib.encryption:AESGCMCodec"
    monkeypatch.delenv("DF_ENCRYPTION_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="set the environment variable DF_ENCRYPTION_KEY"):
        load_codec(path, "DF_CODEC")
    monkeypatch.setenv("DF_ENCRYPTION_KEY", KEY)
    codec = load_codec(path, "DF_CODEC")
    assert isinstance(codec, AESGCMCodec) and codec.key_id == AESGCMCodec(KEY).key_id


def test_missing_cryptography_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigurationError, match=r'pip install "durablefuture\[crypto\]"'):
        AESGCMCodec(KEY)


# --- end to end -------------------------------------------------------------------------------


def define_signup(app: App) -> Any:
    """A workflow whose argument and activity result both carry :data:`MARKER`."""

    @app.activity
    def lookup(name: str) -> dict[str, str]:
        return {"name": name, "note": f"{MARKER}-from-activity"}

    @app.workflow
    async def signup(ctx: Any, name: str) -> dict[str, str]:
        return await ctx.activity(lookup, name)

    return signup


async def stored_bodies(nats_url: str, stream: str) -> list[bytes]:
    """The body of every message still in ``stream``, read with a plain nats-py client."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        bodies = []
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                bodies.append((await js.get_msg(stream, seq)).data)
            except NotFoundError:
                continue  # deleted (an acked task on the work-queue stream)
        return bodies
    finally:
        await nc.close()


def assert_opaque(bodies: list[bytes]) -> None:
    """No body shows the marker or any JSON: each is the codec's header and ciphertext."""
    for body in bodies:
        assert MARKER.encode() not in body
        assert body.startswith(b"DFE\x01"), body[:20]
        assert b'"t":' not in body and b"WorkflowStarted" not in body


async def drain(sub: Any) -> Any:
    """Every message already delivered to ``sub``."""
    while sub.pending_msgs:
        yield await sub.next_msg(timeout=5)


async def test_no_body_on_the_server_is_readable(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app(codec=AESGCMCodec(KEY))

    @app.activity
    def lookup(name: str) -> dict[str, str]:
        return {"name": name, "note": f"{MARKER}-from-activity"}

    @app.workflow
    async def onboarding(ctx: Any, name: str) -> list[Any]:
        looked_up = await ctx.activity(lookup, name)
        await ctx.sleep(0.1)  # a durable timer: its body is stored too
        return [looked_up, await ctx.wait_signal("confirm")]

    watcher = await nats.connect(nats_url)
    published = await watcher.subscribe(f"{namespace}.>")  # sees tasks before they are acked
    await watcher.flush()
    try:
        with WorkerThread(app):
            handle = await onboarding.astart(MARKER, workflow_id="onboarding-1")
            await handle.asignal("confirm", {"by": MARKER})
            result = await handle.aresult(timeout=30)
        assert result == [{"name": MARKER, "note": f"{MARKER}-from-activity"}, {"by": MARKER}]
        events = await handle.ahistory()
        assert {"ActivityCompleted", "TimerFired", "SignalReceived"} <= {e.type for e in events}
        await watcher.flush()
        seen = [msg async for msg in drain(published)]
    finally:
        await watcher.close()
    kinds = {msg.subject.split(".")[1] for msg in seen}
    assert {"history", "task", "timer", "status", "workers"} <= kinds
    # Worker heartbeats carry a random member id and nothing of the application's data.
    beats = [msg for msg in seen if msg.subject.split(".")[1] == "workers"]
    assert all(set(orjson.loads(msg.data)) <= {"id", "hello", "leaving"} for msg in beats)
    assert_opaque([msg.data for msg in seen if msg not in beats])
    history = await stored_bodies(nats_url, Layout(namespace).history_stream)
    assert len(history) >= len(events)
    assert_opaque(history)
    assert_opaque(await stored_bodies(nats_url, Layout(namespace).tasks_stream))  # acked: gone


async def test_a_client_with_another_key_gets_a_clear_error(make_app: Any) -> None:
    app = make_app(codec=AESGCMCodec(KEY))
    signup = define_signup(app)
    with WorkerThread(app):
        handle = await signup.astart("Bob", workflow_id="signup-2")
        await handle.aresult(timeout=30)
    other = make_app(codec=AESGCMCodec(OTHER_KEY))
    stranger = other.get_handle("signup-2")
    for read in (stranger.ahistory, lambda: stranger.aresult(timeout=10)):
        with pytest.raises(CodecKeyError) as info:
            await read()
        message = str(info.value)
        assert f"encrypted with key id {AESGCMCodec(KEY).key_id}" in message
        assert f"this process only has key ids {AESGCMCodec(OTHER_KEY).key_id}" in message
        assert "DF_ENCRYPTION_KEY" in message and KEY not in message


async def test_configured_from_the_environment(
    make_app: Any, nats_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DF_CODEC", "dfcore.contrib.encryption:AESGCMCodec")
    monkeypatch.setenv("DF_ENCRYPTION_KEY", KEY)
    monkeypatch.delenv("DF_ENCRYPTION_OLD_KEYS", raising=False)
    app = make_app()
    assert isinstance(app.codec, AESGCMCodec)
    signup = define_signup(app)
    with WorkerThread(app):
        handle = await signup.astart(MARKER)
        assert (await handle.aresult(timeout=30))["name"] == MARKER
    bodies = await stored_bodies(nats_url, Layout(namespace).history_stream)
    assert_opaque(bodies)
    plain = [AESGCMCodec(KEY).decode(body) for body in bodies]
    assert any(MARKER.encode() in body for body in plain)


def keyed_apps(make_app: Any) -> tuple[App, App]:
    """Two apps with the signup workflow: one with the writers' key, one with another key."""
    good = make_app(codec=AESGCMCodec(KEY))
    define_signup(good)
    wrong = make_app(codec=AESGCMCodec(OTHER_KEY))
    define_signup(wrong)
    return good, wrong


def test_a_worker_with_another_key_retries_and_dead_letters_nothing(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good, wrong = keyed_apps(make_app)
    handle = good.start("signup", "Carol", workflow_id="signup-3")
    with WorkerThread(wrong):
        # The misconfigured worker says why, and hands the message back instead of eating it.
        wait_until(
            lambda: any("cannot decrypt" in r.getMessage() for r in caplog.records),
            what="the worker to report the key it lacks",
        )
    assert good.dead_letters() == []
    with WorkerThread(good):  # a worker with the key finishes the workflow
        assert handle.result(timeout=60)["name"] == "Carol"


def test_an_activity_worker_with_another_key_hands_tasks_back_unharmed(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good, wrong = keyed_apps(make_app)
    with WorkerThread(good, activities=False), WorkerThread(wrong, workflows=False):
        handle = good.start("signup", "Dan", workflow_id="signup-4")
        wait_until(
            lambda: any("handing the task back" in r.getMessage() for r in caplog.records),
            what="the activity worker to hand the task back",
        )
        with WorkerThread(good, workflows=False):  # the copy reaches a worker with the key
            assert handle.result(timeout=60)["name"] == "Dan"
    # The attempt was not recorded as lost: the task came back as a first delivery.
    failures = [e.attributes for e in handle.history() if e.type == "ActivityFailed"]
    assert failures == []
    assert good.dead_letters() == []
