"""Unit tests for dfcore.core._config: defaults, precedence, coercion, errors, config objects."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore.core._codec import IdentityCodec, PayloadCodec
from dfcore.core._config import (
    Settings,
    SourcedValue,
    load_codec,
    read_config_object,
    resolve_settings,
)
from dfcore.core._errors import ConfigurationError


def resolve(
    kwargs: dict[str, Any] | None = None,
    obj: object | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    from_object = read_config_object(obj) if obj is not None else None
    return resolve_settings(kwargs=kwargs or {}, from_object=from_object, environ=environ or {})


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory on sys.path; modules written there are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(root: Path, name: str, source: str) -> None:
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        init = root / parent / "__init__.py"
        if parent != Path(".") and not init.exists():
            init.write_text("")
    path.write_text(textwrap.dedent(source))


# --- defaults and precedence ------------------------------------------------------------------


def test_defaults() -> None:
    settings = resolve()
    assert settings == Settings()
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.servers == ["nats://127.0.0.1:4222"]
    assert (settings.namespace, settings.task_queue, settings.storage) == ("df", "default", "file")
    assert settings.activity_concurrency == 64 and settings.workflow_concurrency == 256
    assert settings.workflow_cache_size == 1000 and settings.stream_replicas == 1
    assert settings.connect_timeout == 5.0 and settings.activity_ack_wait == 30.0
    assert settings.default_activity_timeout == 300.0 and settings.codec is None


def test_precedence_kwargs_over_object_over_env_over_default() -> None:
    obj = {"DF_NAMESPACE": "from-object", "DF_TASK_QUEUE": "from-object"}
    environ = {"DF_NAMESPACE": "from-env", "DF_TASK_QUEUE": "from-env", "DF_STORAGE": "memory"}
    settings = resolve({"namespace": "from-kwargs"}, obj, environ)
    assert settings.namespace == "from-kwargs"
    assert settings.task_queue == "from-object"
    assert settings.storage == "memory"
    assert settings.stream_replicas == 1
    assert settings.sources["namespace"] == "argument namespace"
    assert settings.sources["task_queue"] == "DF_TASK_QUEUE in the config mapping"
    assert settings.sources["storage"] == "environment variable DF_STORAGE"


def test_none_and_empty_values_count_as_unset() -> None:
    settings = resolve({"task_queue": None}, {"DF_TASK_QUEUE": None}, {"DF_TASK_QUEUE": "env"})
    assert settings.task_queue == "env"
    assert resolve(environ={"DF_TASK_QUEUE": ""}).task_queue == "default"


def test_env_values_are_coerced() -> None:
    settings = resolve(
        environ={
            "DF_ACTIVITY_CONCURRENCY": " 8 ",
            "DF_CONNECT_TIMEOUT": "1e3",
            "DF_ACTIVITY_ACK_WAIT": "2.5",
            "DF_STREAM_REPLICAS": "3",
            "DF_STORAGE": "Memory",
            "DF_NATS_URL": "nats://a:4222, tls://b:4223",
        }
    )
    assert settings.activity_concurrency == 8
    assert settings.connect_timeout == 1000.0 and isinstance(settings.connect_timeout, float)
    assert settings.activity_ack_wait == 2.5
    assert settings.stream_replicas == 3
    assert settings.storage == "memory"
    assert settings.servers == ["nats://a:4222", "tls://b:4223"]


def test_native_values_from_kwargs() -> None:
    settings = resolve({"connect_timeout": 2, "nats_url": ["ws://a:80", "wss://b"]})
    assert settings.connect_timeout == 2.0 and isinstance(settings.connect_timeout, float)
    assert settings.nats_url == "ws://a:80,wss://b"


def test_unknown_env_vars_are_ignored() -> None:
    assert resolve(environ={"DF_NO_SUCH_THING": "x", "DF_NATS_ULR": "bad"}) == Settings()


# --- errors -----------------------------------------------------------------------------------


def test_invalid_env_value_names_the_env_var() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(environ={"DF_NATS_URL": "http://localhost:4222"})
    message = str(info.value)
    assert message.startswith("environment variable DF_NATS_URL is invalid")
    assert "'http://localhost:4222'" in message
    assert "has scheme 'http'" in message and "nats://" in message


def test_invalid_kwarg_names_the_kwarg() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve({"nats_url": "localhost:4222"}, environ={"DF_NATS_URL": "nats://ok:4222"})
    message = str(info.value)
    assert message.startswith("argument nats_url is invalid")
    assert "DF_NATS_URL" not in message
    assert "did you mean 'nats://localhost:4222'?" in message


def test_invalid_object_value_names_the_attribute_and_the_object() -> None:
    class Config:
        DF_STREAM_REPLICAS = 7

    with pytest.raises(ConfigurationError) as info:
        resolve(obj=Config)
    message = str(info.value)
    assert "DF_STREAM_REPLICAS in " in message and "Config" in message
    assert "got 7; expected an integer from 1 to 5" in message


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DF_NAMESPACE": "has space"}, "1-32 characters"),
        ({"DF_NAMESPACE": "x" * 33}, "1-32 characters"),
        ({"DF_TASK_QUEUE": "a.b"}, "1-64 characters"),
        ({"DF_CONNECT_TIMEOUT": "0"}, "a number of seconds > 0"),
        ({"DF_CONNECT_TIMEOUT": "nan"}, "a number of seconds > 0"),
        ({"DF_ACTIVITY_ACK_WAIT": "0.5"}, "a number of seconds >= 1"),
        ({"DF_ACTIVITY_CONCURRENCY": "0"}, "an integer >= 1"),
        ({"DF_WORKFLOW_CONCURRENCY": "2.5"}, "an integer >= 1"),
        ({"DF_WORKFLOW_CACHE_SIZE": "-1"}, "an integer >= 0"),
        ({"DF_STREAM_REPLICAS": "6"}, "an integer from 1 to 5"),
        ({"DF_STORAGE": "disk"}, "'file' or 'memory'"),
        ({"DF_CODEC": "not a path!"}, "import path"),
        ({"DF_NATS_URL": "nats://"}, "has no host"),
        ({"DF_NATS_URL": "nats://host:99999"}, "out of range"),
        ({"DF_NATS_URL": " , "}, "URLs with a host"),
        ({"DF_DEFAULT_ACTIVITY_TIMEOUT": "-3"}, "a number of seconds > 0"),
    ],
)
def test_invalid_values(env: dict[str, str], needle: str) -> None:
    (key,) = env
    with pytest.raises(ConfigurationError) as info:
        resolve(environ=env)
    assert f"environment variable {key} is invalid: got {env[key]!r}" in str(info.value)
    assert needle in str(info.value)


def test_bool_is_not_an_integer() -> None:
    with pytest.raises(ConfigurationError, match="argument activity_concurrency"):
        resolve({"activity_concurrency": True})


def test_unknown_kwarg_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve({"nats_ulr": "nats://x"})
    message = str(info.value)
    assert "unknown argument 'nats_ulr' (did you mean 'nats_url'?)" in message
    assert "task_queue" in message and "default_activity_timeout" in message


def test_env_style_kwarg_suggests_the_setting_name() -> None:
    with pytest.raises(
        ConfigurationError, match=r"'DF_TASK_QUEUE' \(did you mean 'task_queue'\?\)"
    ):
        resolve({"DF_TASK_QUEUE": "x"})


def test_settings_validate_on_construction_and_replace() -> None:
    with pytest.raises(ConfigurationError, match=r"Settings\.storage is invalid"):
        Settings(storage="tape")
    settings = dataclasses.replace(Settings(), task_queue="emails")
    assert settings.task_queue == "emails"
    with pytest.raises(ConfigurationError, match=r"Settings\.stream_replicas"):
        dataclasses.replace(settings, stream_replicas=0)


# --- config_from_object -----------------------------------------------------------------------


def test_read_config_object_from_module_path(importable: Path) -> None:
    write_module(
        importable,
        "proj.settings",
        """
        DF_NATS_URL = "nats://nats.internal:4222"
        DF_ACTIVITY_CONCURRENCY = 4
        SECRET_KEY = "unrelated"
        nats_url = "nats://lowercase-is-ignored:1"
        """,
    )
    found = read_config_object("proj.settings")
    assert found == {
        "nats_url": SourcedValue("DF_NATS_URL in proj.settings", "nats://nats.internal:4222"),
        "activity_concurrency": SourcedValue("DF_ACTIVITY_CONCURRENCY in proj.settings", 4),
    }
    settings = resolve_settings(kwargs={}, from_object=found, environ={})
    assert settings.nats_url == "nats://nats.internal:4222"
    assert settings.activity_concurrency == 4


def test_read_config_object_from_class_path_and_module_object(importable: Path) -> None:
    write_module(
        importable,
        "proj2.conf",
        """
        class Config:
            DF_TASK_QUEUE = "emails"
        """,
    )
    assert read_config_object("proj2.conf:Config")["task_queue"].value == "emails"
    assert read_config_object("proj2.conf.Config")["task_queue"].value == "emails"
    module = types.ModuleType("inline")
    module.DF_STORAGE = "memory"  # type: ignore[attr-defined]
    assert read_config_object(module) == {"storage": SourcedValue("DF_STORAGE in inline", "memory")}


def test_read_config_object_from_class_instance_and_dict() -> None:
    class Config:
        DF_NAMESPACE = "shop"

    class Instance:
        def __init__(self) -> None:
            self.DF_NAMESPACE = "inst"

    assert read_config_object(Config)["namespace"].value == "shop"
    assert (
        read_config_object(Instance())["namespace"].label == "DF_NAMESPACE in the Instance object"
    )
    assert read_config_object({"DF_NAMESPACE": "d"})["namespace"].value == "d"


def test_read_config_object_namespaces() -> None:
    assert read_config_object({"nats_url": "nats://a"}, namespace=None) == {
        "nats_url": SourcedValue("nats_url in the config mapping", "nats://a")
    }
    assert read_config_object({"nats_url": "nats://a"}, namespace="") != {}
    assert read_config_object({"APP_TASK_QUEUE": "q"}, namespace="APP")["task_queue"].value == "q"
    assert read_config_object({"df_task_queue": "q"}, namespace="df")["task_queue"].value == "q"
    assert read_config_object({"DF_TASK_QUEUE": "q"}, namespace="APP") == {}


def test_read_config_object_strict_flags_typos() -> None:
    assert read_config_object({"DF_TASK_QEUE": "q"}) == {}
    with pytest.raises(ConfigurationError, match=r"'DF_TASK_QEUE'.*did you mean 'DF_TASK_QUEUE'"):
        read_config_object({"DF_TASK_QEUE": "q"}, strict=True)


def test_read_config_object_import_failure_names_the_path(importable: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot import config object 'nope\.settings'"):
        read_config_object("nope.settings")
    write_module(importable, "proj3.settings", "import module_that_does_not_exist\n")
    with pytest.raises(ConfigurationError) as info:
        read_config_object("proj3.settings")
    assert "'proj3.settings'" in str(info.value)
    assert "module_that_does_not_exist" in str(info.value)


def test_plain_dict_from_object_is_accepted_and_checked() -> None:
    settings = resolve_settings(kwargs={}, from_object={"task_queue": "q"}, environ={})
    assert settings.task_queue == "q"
    with pytest.raises(ConfigurationError, match="did you mean 'task_queue'"):
        resolve_settings(kwargs={}, from_object={"task_queu": "q"}, environ={})


# --- codecs -----------------------------------------------------------------------------------

CODEC_MODULE = """
from dfcore.core._codec import PayloadCodec

class Rot(PayloadCodec):
    def encode(self, data: bytes) -> bytes:
        return bytes((b + 1) % 256 for b in data)

    def decode(self, data: bytes) -> bytes:
        return bytes((b - 1) % 256 for b in data)

INSTANCE = Rot()

class NeedsKey(PayloadCodec):
    def __init__(self, key: bytes) -> None:
        self.key = key

    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> bytes:
        return data
"""


@pytest.mark.parametrize("path", ["mycodecs:Rot", "mycodecs.Rot", "mycodecs:INSTANCE"])
def test_load_codec_by_dotted_path(importable: Path, path: str) -> None:
    write_module(importable, "mycodecs", CODEC_MODULE)
    codec = load_codec(path)
    assert isinstance(codec, PayloadCodec)
    assert type(codec).__name__ == "Rot"
    assert codec.decode(codec.encode(b"abc")) == b"abc"


def test_codec_setting_from_env_loads_lazily(importable: Path) -> None:
    write_module(importable, "mycodecs", CODEC_MODULE)
    settings = resolve(environ={"DF_CODEC": "mycodecs:Rot"})
    assert settings.codec == "mycodecs:Rot"
    codec = settings.load_codec()
    assert codec is not None and codec.encode(b"a") == b"b"


def test_codec_import_failure_names_the_key() -> None:
    settings = resolve(environ={"DF_CODEC": "missing_codecs:Fernet"})
    with pytest.raises(ConfigurationError) as info:
        settings.load_codec()
    message = str(info.value)
    assert message.startswith("environment variable DF_CODEC is invalid")
    assert "'missing_codecs:Fernet'" in message


def test_codec_class_needing_arguments_says_pass_an_instance(importable: Path) -> None:
    write_module(importable, "mycodecs", CODEC_MODULE)
    with pytest.raises(ConfigurationError, match="pass an instance instead"):
        load_codec("mycodecs:NeedsKey", "argument codec")


def test_codec_instance_and_none() -> None:
    codec = IdentityCodec()
    assert resolve({"codec": codec}).load_codec() is codec
    assert isinstance(resolve({"codec": IdentityCodec}).load_codec(), IdentityCodec)
    assert resolve().load_codec() is None
    with pytest.raises(ConfigurationError, match="argument codec is invalid"):
        resolve({"codec": 42})


# --- NATS authentication and TLS --------------------------------------------------------------

SEED = "SUAJ4A7RV2VQDVSOP5HJT74APZFVU62GN7PYZVGZV4RO2L3F37W576A5ZQ"  # a throwaway user seed
PUBLIC = "UASXSLE67YHMDEACKA7IQHUDSSY6X6TB66JSHKXXHU72GOYMJSJTSCCD"  # ...and its public key
ACCOUNT_SEED = "SAAJ4A7RV2VQDVSOP5HJT74APZFVU62GN7PYZVGZV4RO2L3F37W576A5ZQ"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """An existing file standing in for a PEM file (its content is read only at connect)."""
    path = tmp_path / "file.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_auth_and_tls_settings_from_the_environment(pem: Path, tmp_path: Path) -> None:
    environ = {
        "DF_NATS_URL": "tls://nats.internal:4222",
        "DF_NATS_USER": "app",
        "DF_NATS_PASSWORD": "s3cret",
        "DF_NATS_TLS_CA_FILE": str(pem),
        "DF_NATS_TLS_CERT_FILE": str(pem),
        "DF_NATS_TLS_KEY_FILE": str(pem),
        "DF_NATS_TLS_HOSTNAME": " nats.internal ",
    }
    settings = resolve(environ=environ)
    assert (settings.nats_user, settings.nats_password) == ("app", "s3cret")
    assert settings.nats_tls_ca_file == str(pem) and settings.nats_tls_hostname == "nats.internal"
    assert settings.tls_required
    assert settings.label("nats_password") == "environment variable DF_NATS_PASSWORD"
    assert resolve({"nats_nkey_seed": f" {SEED}\n"}).nats_nkey_seed == SEED


def test_tls_is_required_by_a_tls_url_or_a_tls_file(pem: Path) -> None:
    assert not resolve().tls_required
    assert not resolve({"nats_tls_hostname": "x"}).tls_required
    assert resolve({"nats_url": "nats://a:4222,tls://b:4222"}).tls_required
    assert resolve({"nats_url": "wss://a"}).tls_required
    assert resolve({"nats_tls_ca_file": str(pem)}).tls_required


def test_secrets_are_masked_in_repr_and_display_url() -> None:
    settings = resolve({"nats_url": "nats://bob:hunter2@a:4222,nats://t0ken@b", "namespace": "n"})
    assert settings.display_url == "nats://bob:***@a:4222,nats://***@b"
    assert "hunter2" not in repr(settings) and "t0ken" not in repr(settings)
    assert "nats_url='nats://bob:***@a:4222,nats://***@b'" in repr(settings)
    for kwargs in ({"nats_token": "t0ken"}, {"nats_user": "u", "nats_password": "hunter2"}):
        shown = repr(resolve(kwargs))
        assert "t0ken" not in shown and "hunter2" not in shown and "='***'" in shown
    assert SEED not in repr(resolve({"nats_nkey_seed": SEED}))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"nats_password": 42}, "expected a non-empty password"),
        ({"nats_token": b"t0ken-as-bytes"}, "expected a non-empty token"),
        ({"nats_nkey_seed": "SUxyz-not-a-seed"}, "58 characters starting with 'SU'"),
        ({"nats_nkey_seed": SEED[:-1] + "A"}, "not a valid NKey seed"),  # checksum
        ({"nats_nkey_seed": PUBLIC}, "this is a user's public key"),
        ({"nats_nkey_seed": ACCOUNT_SEED}, "this is the seed of an account"),
        ({"nats_nkey_seed": "/run/secrets/user.nk"}, "use nats_nkey_seed_file"),
    ],
)
def test_invalid_secrets_are_not_echoed(kwargs: dict[str, Any], needle: str) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ConfigurationError) as info:
        resolve(kwargs)
    message = str(info.value)
    assert message.startswith(f"argument {name} is invalid") and needle in message
    assert str(value) not in message


def test_a_password_in_an_invalid_url_is_masked() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(environ={"DF_NATS_URL": "http://bob:hunter2@a:4222"})
    assert "hunter2" not in str(info.value) and "http://bob:***@a:4222" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        resolve({"nats_url": "bob:hunter2@a:4222"})
    assert "hunter2" not in str(info.value) and "'nats://bob:***@a:4222'" in str(info.value)


def test_conflicting_auth_methods_are_named_as_written(tmp_path: Path) -> None:
    creds = tmp_path / "app.creds"
    creds.write_text("")
    with pytest.raises(ConfigurationError) as info:
        resolve({"nats_token": "t"}, {"DF_NATS_USER": "u"}, {"DF_NATS_PASSWORD": "p"})
    message = str(info.value)
    assert message.startswith("conflicting NATS authentication settings: argument nats_token")
    assert "DF_NATS_USER in the config mapping and environment variable DF_NATS_PASSWORD" in message
    assert "are both set" in message and "nats_creds_file" in message and "'p'" not in message
    with pytest.raises(ConfigurationError, match=r"the credentials in argument nats_url are all"):
        resolve({"nats_url": "nats://u:p@h", "nats_token": "t", "nats_creds_file": str(creds)})
    with pytest.raises(ConfigurationError, match="nats_nkey_seed and argument nats_nkey_seed_file"):
        resolve({"nats_nkey_seed": SEED, "nats_nkey_seed_file": str(creds)})


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"DF_NATS_USER": "u"}, "DF_NATS_USER is set but nats_password is not"),
        ({"DF_NATS_PASSWORD": "p"}, "DF_NATS_PASSWORD is set but nats_user is not"),
        ({"DF_NATS_TLS_CERT_FILE": "PEM"}, "DF_NATS_TLS_CERT_FILE is set but nats_tls_key_file"),
        ({"DF_NATS_TLS_KEY_FILE": "PEM"}, "DF_NATS_TLS_KEY_FILE is set but nats_tls_cert_file"),
    ],
)
def test_half_a_pair_is_an_error(pem: Path, given: dict[str, str], needle: str) -> None:
    environ = {key: str(pem) if value == "PEM" else value for key, value in given.items()}
    with pytest.raises(ConfigurationError, match=needle):
        resolve(environ=environ)


def test_missing_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        resolve(environ={"DF_NATS_TLS_CA_FILE": "certs/ca.pem"})
    message = str(info.value)
    assert message.startswith("environment variable DF_NATS_TLS_CA_FILE is invalid")
    assert "there is no such file" in message and f"current folder {tmp_path}" in message
    with pytest.raises(ConfigurationError, match="it is a folder"):
        resolve({"nats_creds_file": tmp_path})


def test_tls_files_with_a_ws_url_are_refused(pem: Path) -> None:
    with pytest.raises(ConfigurationError, match="use wss://"):
        resolve({"nats_url": "ws://a:8080", "nats_tls_ca_file": str(pem)})


def test_nkey_methods_need_the_nkeys_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nkeys", None)  # makes `import nkeys` fail
    with pytest.raises(ConfigurationError) as info:
        resolve(environ={"DF_NATS_NKEY_SEED": SEED})
    message = str(info.value)
    assert "environment variable DF_NATS_NKEY_SEED needs the nkeys package" in message
    assert "pip install 'durablefuture[nkeys]'" in message and SEED not in message


def test_seed_and_creds_files_are_checked(tmp_path: Path) -> None:
    seed_file, creds = tmp_path / "user.nk", tmp_path / "user.creds"
    seed_file.write_text(SEED + "\n")
    assert resolve({"nats_nkey_seed_file": str(seed_file)}).nats_nkey_seed_file == str(seed_file)
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\neyJhbGciOi.e30.sig\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
    )
    assert resolve({"nats_creds_file": str(creds)}).nats_creds_file == str(creds)
    with pytest.raises(ConfigurationError, match="use nats_creds_file"):
        resolve({"nats_nkey_seed_file": str(creds)})
    with pytest.raises(ConfigurationError, match="holds a bare seed: use nats_nkey_seed_file"):
        resolve({"nats_creds_file": str(seed_file)})
    seed_file.write_text(SEED[:-1] + "A")
    with pytest.raises(ConfigurationError) as info:
        resolve({"nats_nkey_seed_file": str(seed_file)})
    assert "not a valid NKey seed" in str(info.value) and SEED[:-1] not in str(info.value)


def test_worker_event_loop_is_uvloop_where_installed_unless_asked_otherwise() -> None:
    import uvloop

    from dfcore.worker._process import worker_loop_factory

    assert Settings().worker_event_loop == "auto"
    assert worker_loop_factory(Settings()) is uvloop.new_event_loop
    assert worker_loop_factory(Settings(worker_event_loop="asyncio")) is None
    assert resolve({"worker_event_loop": " UVLOOP "}).worker_event_loop == "uvloop"
    with pytest.raises(ConfigurationError, match="'auto', 'asyncio' or 'uvloop'"):
        resolve({"worker_event_loop": "trio"})


def test_a_worker_command_collects_young_objects_less_often_and_puts_it_back() -> None:
    import gc

    from dfcore.worker._process import young_collections

    assert Settings().worker_gc_threshold == 20000
    assert resolve({"worker_gc_threshold": "0"}).worker_gc_threshold == 0
    with pytest.raises(ConfigurationError, match=r"worker_gc_threshold.*an integer >= 0"):
        resolve({"worker_gc_threshold": "-1"})
    before = gc.get_threshold()
    with young_collections(20000):
        assert gc.get_threshold() == (20000, *before[1:])
    assert gc.get_threshold() == before
    with young_collections(0):
        assert gc.get_threshold() == before
