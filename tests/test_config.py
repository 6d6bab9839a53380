"""Config: defaults < file < env < flags, validation, secret masking; broker URLs."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

import uns.config as config_module
from uns.config import (
    SECTIONS,
    BrokerSection,
    ContextSection,
    EngineSection,
    LakeSection,
    RepublishSection,
    SparkplugSection,
    file_keys,
    key_type,
    load_config,
)
from uns.config_options import OPTIONS_SCHEMA, option_tables, options_schema
from uns.config_schema import config_json_schema
from uns.errors import ConfigError
from uns.mqtt.settings import Backoff, parse_broker_url


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    assert cfg.engine.prefix == "uns/v1"
    assert cfg.engine.primary is False
    assert cfg.lake.fsync_interval <= 1.0


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "uns.toml"
    f.write_text('[engine]\nhost_id = "from-file"\nprimary = true\n[lake]\npath = "/srv/lake"\n')
    cfg = load_config(f, env={})
    assert (cfg.engine.host_id, cfg.engine.primary, cfg.lake.path) == ("from-file", True, "/srv/lake")
    cfg = load_config(f, env={"UNS_HOST_ID": "from-env", "UNS_LAKE_PATH": "/env/lake"})
    assert (cfg.engine.host_id, cfg.lake.path) == ("from-env", "/env/lake")
    cfg = load_config(f, env={"UNS_HOST_ID": "from-env"}, overrides={"engine.host_id": "from-flag"})
    assert cfg.engine.host_id == "from-flag"
    cfg = load_config(f, env={"UNS_PRIMARY": "false"}, overrides={"engine.primary": None})
    assert cfg.engine.primary is False


def test_config_file_from_env(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[broker]\nurl = "mqtt://broker.plant:1884"\n')
    assert load_config(env={"UNS_CONFIG": str(f)}).broker.settings().port == 1884


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[engine]\nhost_idd = 'x'\n", "unknown setting 'engine.host_idd'"),
        ("[engine]\nprimary = 'maybe'\n", "engine.primary must be true or false"),
        ("[lake]\ncommit_rows = 'many'\n", "lake.commit_rows must be an integer"),
        ("[broker]\nurl = 'http://x'\n", "scheme must be mqtt:// or mqtts://"),
        ("[engine]\nprefix = 'uns/#'\n", "engine.prefix"),
        ("[republish]\nmode = 'sometimes'\n", "republish.mode"),
        ("engine = 3\n", "must be a [section]"),
        ("[engine\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[lake]\n# rows per commit\ncommit_rows = 0\n",
            "bad.toml line 3: lake.commit_rows must be > 0, got 0",
        ),
        (
            "[engine]\nhost_id = 'a'\n\n[republish]\nmode = \"sometimes\"\n",
            "bad.toml line 5: republish.mode must be 'metric' or 'device', got 'sometimes'",
        ),
        (
            "[lake]\ncommit_worker_nice = 25\n",
            "bad.toml line 2: lake.commit_worker_nice must be 0-19, got 25",
        ),
    ],
)
def test_a_value_out_of_range_names_file_line_key_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert str(info.value) == f"{tmp_path}/{expected}"


def test_a_value_out_of_range_names_the_variable_or_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"UNS_REPUBLISH_MODE": "foo"})
    assert str(info.value) == (
        "environment UNS_REPUBLISH_MODE: republish.mode must be 'metric' or 'device', got 'foo'"
    )
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"lake.commit_rows": 0})
    assert str(info.value) == "command line: lake.commit_rows must be > 0, got 0"
    assert info.value.key == "lake.commit_rows"


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/uns.toml", env={})


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(ConfigError, match="environment UNS_LAKE_COMMIT_ROWS"):
        load_config(env={"UNS_LAKE_COMMIT_ROWS": "lots"})


def test_secrets_masked() -> None:
    cfg = load_config(env={"UNS_BROKER": "mqtts://op:s3cret@broker:8883", "UNS_BROKER_PASSWORD": "other"})
    shown = repr(cfg.to_dict(masked=True))
    assert "s3cret" not in shown
    assert "other" not in shown
    assert "op:***@broker:8883" in shown
    assert "s3cret" not in repr(cfg.broker.settings())
    assert cfg.broker.settings().password == "other"  # explicit password wins over the URL's


def test_broker_url_forms() -> None:
    b = parse_broker_url("mqtt://host")
    assert (b.host, b.port, b.tls, b.username) == ("host", 1883, False, None)
    b = parse_broker_url("mqtts://u%40x:p%3Aw@h.example:9000")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("h.example", 9000, True, "u@x", "p:w")
    assert parse_broker_url("mqtts://h").port == 8883


@pytest.mark.parametrize("url", ["tcp://h", "mqtt://", "mqtt://h:99999", "mqtt://h/path", "h:1883"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_broker_url(url)


def test_bad_url_error_masks_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_broker_url("tcp://user:topsecret@h")
    assert "topsecret" not in str(info.value)


@given(st.integers(min_value=0, max_value=40))
def test_backoff_is_capped_and_positive(attempts: int) -> None:
    b = Backoff(0.5, 30.0)
    delays = [b.next() for _ in range(attempts + 1)]
    assert all(0 < d <= 30.0 for d in delays)
    b.reset()
    assert b.next() <= 0.5


def test_committed_config_schema_is_current_and_example_validates() -> None:
    root = Path(__file__).resolve().parent.parent
    committed = json.loads((root / "schemas" / "config.schema.json").read_text())
    assert committed == config_json_schema(), "regenerate schemas/config.schema.json"
    example = tomllib.loads((root / "examples" / "uns.toml").read_text())
    jsonschema.validate(example, committed)
    load_config(root / "examples" / "uns.toml", env={})


def test_lake_compaction_can_be_turned_off_but_not_negative() -> None:
    assert load_config(None, env={"UNS_LAKE_COMPACT_INTERVAL": "0"}).lake.compact_interval == 0
    with pytest.raises(ConfigError, match="compact_interval"):
        load_config(None, env={"UNS_LAKE_COMPACT_INTERVAL": "-1"})


# --- one config: the file, the schema and the section classes agree -------------------------


def _file_fields() -> dict[str, dict[str, dataclasses.Field[Any]]]:
    return {name: {f.name: f for f in file_keys(cls)} for name, cls in SECTIONS.items()}


def test_every_example_key_is_a_section_field_and_every_field_is_in_the_example() -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "examples" / "uns.toml").read_text()
    example = tomllib.loads(text)
    # keys commented out in the example (secrets, TLS files) count as present: "# key = ..."
    commented = {
        (section, key)
        for section, body in re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
        for key in re.findall(r"^# (\w+) = ", body, flags=re.M)
    }
    fields = _file_fields()
    assert list(example) == list(fields), "sections, in the same order"
    for section, keys in fields.items():
        present = set(example[section]) | {k for s, k in commented if s == section}
        assert present == set(keys), f"[{section}] in examples/uns.toml"
        for key, value in example[section].items():
            base, _ = key_type(_hints(section)[key])
            base = list if base is tuple else base  # a TOML array
            assert isinstance(value, base) and not (base is int and isinstance(value, bool)), (
                f"{section}.{key} = {value!r} is not {base.__name__}"
            )


def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def test_every_schema_key_matches_a_section_field_with_its_type_and_default() -> None:
    root = Path(__file__).resolve().parent.parent
    schema = json.loads((root / "schemas" / "config.schema.json").read_text())
    fields = _file_fields()
    assert list(schema["properties"]) == list(fields)
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "array"}
    for section, keys in fields.items():
        props = dict(schema["properties"][section]["properties"])
        for table in option_tables(SECTIONS[section]):  # [lake.storage]: an object, not a key
            assert props.pop(table) == options_schema(SECTIONS[section], table)
        assert list(props) == list(keys), f"schema keys of [{section}]"
        defaults = SECTIONS[section]()
        for key, spec in props.items():
            base, optional = key_type(_hints(section)[key])
            if (section, key) == ("broker", "protocol"):  # "5" or 5, both taken
                assert spec["type"] == ["string", "integer"] and spec["default"] == "3.1.1"
                continue
            if base is tuple:
                assert spec["type"] == "array" and spec["default"] == list(getattr(SECTIONS[section](), key))
                continue
            assert spec["type"] == ([json_type[base], "null"] if optional else json_type[base]), (
                f"{section}.{key}"
            )
            default = getattr(defaults, key)
            assert spec.get("default") == default, f"default of {section}.{key}"
            assert keys[key].default == default  # the field's own default: the only one


def test_storage_options_come_from_a_table_and_their_secrets_never_show(tmp_path: Path) -> None:
    file = tmp_path / "uns.toml"
    text = '[lake]\npath = "s3://b/p"\n[lake.storage]\nAWS_REGION = "eu-1"\naws_allow_http = true\n'
    file.write_text(text + 'aws_secret_access_key = "s3cr3t"\n')
    jsonschema.validate(tomllib.loads(file.read_text()), config_json_schema())
    cfg = load_config(file, env={})
    assert dict(cfg.lake.storage) == {
        "aws_region": "eu-1",
        "aws_allow_http": "true",
        "aws_secret_access_key": "s3cr3t",
    }
    assert cfg.to_dict()["lake"]["storage"]["aws_secret_access_key"] == "***"
    assert cfg.to_dict(masked=False)["lake"]["storage"]["aws_secret_access_key"] == "s3cr3t"
    assert "s3cr3t" not in repr(cfg)
    file.write_text('[broker.storage]\nx = "y"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(file, env={})
    file.write_text("[lake.storage]\nx = [1]\n")
    with pytest.raises(ConfigError, match=r"lake\.storage\.x must be text"):
        load_config(file, env={})


def test_tuning_fields_are_not_config_keys() -> None:
    lake_keys = {f.name for f in file_keys(LakeSection)}
    assert {"segment_max_bytes", "retry_initial_s", "retry_max_s"}.isdisjoint(lake_keys)
    assert "segment_max_bytes" in {f.name for f in dataclasses.fields(LakeSection)}
    with pytest.raises(ConfigError, match=r"unknown setting 'lake\.retry_max_s'"):
        load_config(env={"UNS_LAKE_RETRY_MAX_S": "1"})
    assert "retry_max_s" not in load_config(env={}).to_dict()["lake"]
    with pytest.raises(ConfigError, match=r"lake\.retry_initial_s"):
        LakeSection(retry_initial_s=5.0, retry_max_s=1.0)


def test_the_lake_package_config_is_the_lake_section() -> None:
    from uns import lake  # noqa: PLC0415 - the package loads its names lazily

    assert lake.LakeConfig is LakeSection


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        (BrokerSection, {"url": "tcp://h"}, "broker.url"),
        (EngineSection, {"host_id": "a/b"}, "engine.host_id"),
        (EngineSection, {"prefix": "uns/+"}, "engine.prefix"),
        (EngineSection, {"on_reconnect": "never"}, "engine.on_reconnect"),
        (EngineSection, {"log_level": "loud"}, "engine.log_level"),
        (EngineSection, {"status_interval": 0.0}, "engine.status_interval"),
        (SparkplugSection, {"reorder_timeout_ms": -1}, "sparkplug.reorder_timeout_ms"),
        (SparkplugSection, {"rebirth_min_interval_ms": -1}, "sparkplug.rebirth_min_interval_ms"),
        (SparkplugSection, {"max_reorder_buffer": -1}, "sparkplug.max_reorder_buffer"),
        (RepublishSection, {"qos": 3}, "republish.qos"),
        (RepublishSection, {"mode": "batch"}, "republish.mode"),
        (RepublishSection, {"max_queue": 0}, "republish.max_queue"),
        (RepublishSection, {"max_in_flight": 0}, "republish.max_in_flight"),
        (RepublishSection, {"drain_timeout_s": -1.0}, "republish.drain_timeout_s"),
        (LakeSection, {"commit_rows": 0}, "lake.commit_rows"),
        (LakeSection, {"commit_interval": 0.0}, "lake.commit_interval"),
        (LakeSection, {"fsync_interval": -1.0}, "lake.fsync_interval"),
        (LakeSection, {"wal_max_bytes": 0}, "lake.wal_max_bytes"),
        (LakeSection, {"compact_interval": -1.0}, "lake.compact_interval"),
        (LakeSection, {"writer_id": "../x"}, "lake.writer_id"),
        (LakeSection, {"segment_max_bytes": 0}, "lake.segment_max_bytes"),
        (ContextSection, {"window_hours": 0.0}, "context.window_hours"),
    ],
)
def test_each_section_validates_itself(section: type, values: dict[str, Any], key: str) -> None:
    """The section's constructor is the one place of validation, for the file and for code."""
    with pytest.raises(ConfigError) as info:
        section(**values)
    assert info.value.key == key
    assert key in str(info.value) or section is BrokerSection  # its message: "bad broker URL ..."


def test_sections_are_frozen() -> None:
    cfg = load_config(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lake.commit_rows = 1  # type: ignore[misc]


def test_include_transient_has_one_default() -> None:
    """The default `uns run` used (true) is the section's, and the sink reads the section."""
    assert RepublishSection().include_transient is True
    assert load_config(env={}).republish == RepublishSection()


def test_key_types_come_from_the_annotations() -> None:
    assert key_type(bool) == (bool, False)
    assert key_type(str | None) == (str, True)
    assert key_type(typing.Optional[int]) == (int, True)  # noqa: UP045 - the other spelling
    with pytest.raises(TypeError):
        key_type(list[str])
    with pytest.raises(TypeError):
        key_type(int | str)
    # "interval" contains "int": a float key must not be read as an integer
    assert load_config(env={"UNS_LAKE_COMMIT_INTERVAL": "2.5"}).lake.commit_interval == 2.5


def test_print_config_shows_no_password_in_the_repr() -> None:
    cfg = load_config(env={"UNS_BROKER": "mqtt://u:s3cret@h", "UNS_BROKER_PASSWORD": "other"})
    assert "s3cret" not in repr(cfg)
    assert "other" not in repr(cfg)


def test_the_example_shows_the_defaults_or_says_it_does_not() -> None:
    """examples/uns.toml is the reference with defaults: a value that is not the default is
    marked "(default: ...)" on its line."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "examples" / "uns.toml").read_text()
    example = tomllib.loads(text)
    defaults = config_module.Config()
    differ = []
    for section, table in example.items():
        for key, value in table.items():
            if value != getattr(getattr(defaults, section), key):
                line = next(ln for ln in text.splitlines() if ln.startswith(f"{key} ="))
                if "(default:" not in line:
                    differ.append(f"{section}.{key}")
    assert not differ, f"examples/uns.toml: not the default and not marked: {differ}"


def test_the_directory_of_the_web_workspace_is_read_and_checked(tmp_path: Path) -> None:
    """[web.ldap] with its [web.ldap.roles] map (a table inside the option table): read,
    schema-valid, and a wrong option is named."""
    from uns.config_web import ldap_settings  # noqa: PLC0415

    file = tmp_path / "uns.toml"
    file.write_text(
        '[web.ldap]\nurl = "ldap://127.0.0.1:3890"\nuser_dn = "uid={user},ou=people,dc=x"\n'
        'group_base = "ou=groups,dc=x"\n[web.ldap.roles]\nQA-Reviewers = "reviewer"\n'
        'qa-boss = "approver, reviewer"\n'
    )
    jsonschema.validate(tomllib.loads(file.read_text()), config_json_schema())
    settings = ldap_settings(load_config(file, env={}).web.ldap)
    assert settings is not None and settings.url == "ldap://127.0.0.1:3890"
    assert settings.roles == (("qa-boss", ("approver", "reviewer")), ("qa-reviewers", ("reviewer",)))
    assert options_schema(config_module.LakeSection, "storage") == OPTIONS_SCHEMA  # [lake.storage] stays flat
    for text, needle in (
        (
            '[web.ldap]\nurl = "ldap://h"\nuser_dn = "uid=x"\n',
            r"web\.ldap\.user_dn must be a DN with \{user\}",
        ),
        ('[web.ldap]\nurl = "http://h"\nuser_dn = "uid={user}"\n', r"web\.ldap\.url must be ldap://"),
        (
            '[web.ldap]\nurl = "ldap://h"\nuser_dn = "uid={user}"\nbind = "x"\n',
            r"unknown setting web\.ldap\.bind",
        ),
        (
            '[web.ldap]\nurl = "ldap://h"\nuser_dn = "uid={user}"\n[web.ldap.roles]\ng = "boss"\n',
            "roles of viewer",
        ),
        ('[web.ldap]\nuser_dn = "uid={user}"\n', r"web\.ldap\.url must be set"),
        ("[web]\nlisten = 'nowhere'\n", r"web\.listen must be host:port"),
        ("[web]\ntls_cert = 'a.pem'\n", r"web\.tls_key must be given together"),
        ("[web]\nmax_failed_logins = 0\n", r"web\.max_failed_logins must be >= 1"),
    ):
        file.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_config(file, env={})
    assert load_config(None, env={"UNS_WEB_SIGNING_KEY": "/k/web.key"}).web.signing_key == "/k/web.key"
