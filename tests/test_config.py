"""Config: defaults < file < env < flags, validation, secret masking; broker URLs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uns.config import config_json_schema, load_config
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
