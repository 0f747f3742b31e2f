"""Settings: the shipped config files, every error path of loading, and the environment."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ingest.errors import ConfigError
from ingest.settings import (
    CHANNELS,
    DEFAULT_ENDPOINTS,
    INTERVALS,
    ExchangeSettings,
    Settings,
    apply_env,
    canonical_exchange,
    database_url_from_env,
    load_settings,
    parse_settings,
    parse_shard,
    redact_dsn,
    to_display,
)

REPO = Path(__file__).resolve().parents[1]
INGEST_TOML = REPO / "config" / "ingest.toml"
SIMULATED_TOML = REPO / "config" / "simulated.toml"


def defaults() -> Settings:
    return parse_settings({}, "<defaults>")


def write(tmp_path: Path, text: str, name: str = "ingest.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # every file error names the file first
    return message


# ---------------------------------------------------------------------------------------------
# The shipped files


def test_ingest_toml_loads_to_exactly_the_defaults() -> None:
    loaded = load_settings(INGEST_TOML, env={})
    assert loaded.source == str(INGEST_TOML)
    assert dataclasses.replace(loaded, source="<defaults>") == defaults()


def test_ingest_toml_spells_out_every_key_of_every_section() -> None:
    data = tomllib.loads(INGEST_TOML.read_text(encoding="utf-8"))
    hints = typing.get_type_hints(Settings)
    sections = {f.name for f in dataclasses.fields(Settings)} - {"source"}
    assert set(data) == sections
    for name in sections - {"exchanges"}:
        expected = {f.name for f in dataclasses.fields(hints[name])}
        assert set(data[name]) == expected, name
    assert set(data["exchanges"]) == {"binance", "gateio", "huobi"}
    exchange_keys = {f.name for f in dataclasses.fields(ExchangeSettings)}
    for name, section in data["exchanges"].items():
        assert set(section) == exchange_keys, name
        for key, url in DEFAULT_ENDPOINTS[name].items():
            assert section[key] == url, f"{name}.{key}"


def test_ingest_toml_comments_every_key() -> None:
    lines = INGEST_TOML.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            # The key's own comment, or the comment heading a group of related keys.
            above = [x for x in lines[:i] if x.strip()][-1]
            assert above.startswith("#") or "=" in above, f"line {i + 1} has no comment: {line}"


def test_simulated_toml_points_every_endpoint_at_the_simulator() -> None:
    s = load_settings(SIMULATED_TOML, env={})
    b, g, h = (s.exchanges[n] for n in ("binance", "gateio", "huobi"))
    assert (b.ws_url, b.rest_url) == (
        "ws://127.0.0.1:8765/binance",
        "http://127.0.0.1:8765/binance",
    )
    assert (g.ws_url, g.rest_url) == (
        "ws://127.0.0.1:8765/gateio/ws/v4/",
        "http://127.0.0.1:8765/gateio/api/v4",
    )
    assert (h.ws_url, h.ws_feed_url, h.rest_url) == (
        "ws://127.0.0.1:8765/huobi/ws",
        "ws://127.0.0.1:8765/huobi/feed",
        "http://127.0.0.1:8765/huobi",
    )
    assert s.metrics.coingecko_url == "http://127.0.0.1:8765/coingecko/api/v3"
    assert s.metrics.fear_greed_url == "http://127.0.0.1:8765/alternative"
    assert s.health.port == 8080
    for ex in s.exchanges.values():
        assert ex.snapshot_interval_s < defaults().exchanges["binance"].snapshot_interval_s
        for url in (ex.ws_url, ex.rest_url, ex.ws_feed_url):
            assert url == "" or urlsplit(url).netloc == "127.0.0.1:8765", url


# ---------------------------------------------------------------------------------------------
# Structure errors


def test_unknown_section(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[databse]\nurl = ''\n")
    assert "databse: unknown section" in message
    assert "database" in message  # lists the known ones


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[writer]\nmax_batch_row = 10\n")
    assert "writer.max_batch_row: unknown key" in message
    assert "max_batch_rows" in message


def test_unknown_key_in_exchange_section(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[exchanges.binance]\nsymbol = ['BTC/USDT']\n")
    assert "exchanges.binance.symbol: unknown key" in message


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert "writer: must be a table" in load_error(tmp_path, "writer = 5\n")
    assert "exchanges: must be a table" in load_error(tmp_path, "exchanges = 5\n")


def test_bad_toml_syntax(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[writer]\nmax_batch_rows 10\n")
    assert "invalid TOML" in message
    assert "line 2" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings(path, env={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path, env={})


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[service]\nrecord_dir = '\xe9'\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml"):
        load_settings(path, env={})


# ---------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[writer]\nmax_batch_rows = "10"', "writer.max_batch_rows", "must be an integer"),
        ("[writer]\nmax_batch_rows = true", "writer.max_batch_rows", "must be an integer"),
        ("[writer]\nmax_batch_rows = 10.5", "writer.max_batch_rows", "must be an integer"),
        ("[health]\nenabled = 1", "health.enabled", "must be true or false"),
        ('[health]\nenabled = "yes"', "health.enabled", "must be true or false"),
        ("[writer]\nshutdown_budget_s = false", "writer.shutdown_budget_s", "must be a number"),
        ('[writer]\nshutdown_budget_s = "8"', "writer.shutdown_budget_s", "must be a number"),
        ("[writer]\nspool_dir = 5", "writer.spool_dir", "must be a string"),
        (
            '[exchanges.binance]\nsymbols = "BTC/USDT"',
            "exchanges.binance.symbols",
            "must be a list",
        ),
        (
            "[exchanges.binance]\nsymbols = [1, 2]",
            "exchanges.binance.symbols",
            "must be a list of strings",
        ),
        (
            '[logging]\nlevel = "info"',
            "logging.level",
            "must be one of DEBUG, INFO, WARNING, ERROR",
        ),
        ('[logging]\nformat = "xml"', "logging.format", "must be one of auto, json, console"),
        (
            '[database]\ntimescaledb = "yes"',
            "database.timescaledb",
            "must be one of auto, require, off",
        ),
        ('[metrics]\ncoingecko_api_plan = "free"', "metrics.coingecko_api_plan", "must be one of"),
    ],
)
def test_wrong_types(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    message = load_error(tmp_path, toml + "\n")
    assert f"{key}: {problem}" in message


def test_int_is_accepted_for_float_and_converted() -> None:
    s = parse_settings({"writer": {"shutdown_budget_s": 5}}, "t.toml")
    assert s.writer.shutdown_budget_s == 5.0
    assert isinstance(s.writer.shutdown_budget_s, float)


# ---------------------------------------------------------------------------------------------
# Ranges and values


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("writer", "max_batch_rows", 0),
        ("writer", "flush_interval_ms", 600_001),
        ("writer", "shutdown_budget_s", 0.4),
        ("writer", "spool_max_mb", -1),
        ("database", "pool_max_size", 101),
        ("database", "connect_timeout_s", 0.0),
        ("health", "port", 65536),
        ("health", "port", -1),
        ("metrics", "coingecko_interval_s", 9.9),
        ("metrics", "fear_greed_interval_s", 59),
        ("metrics", "max_body_bytes", 1023),
        ("backfill", "gap_repair_lookback_h", 24 * 365 + 1),
        ("logging", "summary_interval_s", 0.5),
    ],
)
def test_out_of_range(section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({section: {key: value}}, "t.toml")
    message = str(info.value)
    assert message.startswith(f"t.toml: {section}.{key}: must be between "), message
    assert float(message.rsplit("got ", 1)[1]) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_are_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError, match=r"writer\.db_timeout_s: must be between"):
        parse_settings({"writer": {"db_timeout_s": value}}, "t.toml")


def test_range_bounds_are_inclusive() -> None:
    s = parse_settings({"health": {"port": 65535}, "writer": {"spool_max_mb": 0}}, "t.toml")
    assert (s.health.port, s.writer.spool_max_mb) == (65535, 0)


def test_exchange_range(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[exchanges.htx]\nbook_depth = 0\n")
    assert "exchanges.htx.book_depth: must be between 1 and 1000, got 0" in message


def test_pool_min_above_max() -> None:
    with pytest.raises(ConfigError, match=r"database\.pool_min_size: must not exceed"):
        parse_settings({"database": {"pool_min_size": 5, "pool_max_size": 4}}, "t.toml")


def test_bad_sslmode_in_file() -> None:
    with pytest.raises(ConfigError, match=r"t\.toml: database\.sslmode: must be one of .*'strict'"):
        parse_settings({"database": {"sslmode": "strict"}}, "t.toml")


@pytest.mark.parametrize("section", ["retention", "compression"])
@pytest.mark.parametrize("value", ["7 yrs", "forever", "7", "years", "-1 day", "1 day; DROP TABLE trades",
                                   "0 days", "00 years"])
def test_bad_interval(section: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.candlesticks: must be a positive interval like"):
        parse_settings({section: {"candlesticks": value}}, "t.toml")


@pytest.mark.parametrize("value", ["", "1 day", "30 Days", "2 weeks", "1 year", "12 hours", "90 minutes"])
def test_good_interval(value: str) -> None:
    assert parse_settings({"retention": {"trades": value}}, "t.toml").retention.trades == value


def test_bad_channel(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[exchanges.binance]\nchannels = ['trades', 'ticker']\n")
    assert "exchanges.binance.channels: unknown channel 'ticker'" in message
    assert all(c in message for c in CHANNELS)


def test_bad_candle_interval(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[exchanges.gateio]\ncandle_intervals = ['1m', '2m']\n")
    assert "exchanges.gateio.candle_intervals: unsupported interval '2m'" in message
    assert " ".join(INTERVALS) in message


@pytest.mark.parametrize("symbol", ["BTCUSDT", "btc/usdt", "BTC-USDT", "BTC/", "/USDT", "BTC/USDT/X", ""])
def test_bad_symbol_form(symbol: str) -> None:
    with pytest.raises(ConfigError, match=r"exchanges\.binance\.symbols: symbol .* must be unified form"):
        parse_settings({"exchanges": {"binance": {"symbols": [symbol]}}}, "t.toml")


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("ws_url", "https://stream.binance.com"),
        ("ws_url", "stream.binance.com:9443"),
        ("rest_url", "wss://api.binance.com"),
        ("rest_url", "ftp://api.binance.com"),
    ],
)
def test_bad_exchange_url(key: str, url: str) -> None:
    with pytest.raises(ConfigError, match=rf"exchanges\.binance\.{key}: must be a URL starting with"):
        parse_settings({"exchanges": {"binance": {key: url}}}, "t.toml")


def test_bad_huobi_feed_url() -> None:
    with pytest.raises(ConfigError, match=r"exchanges\.huobi\.ws_feed_url: must be a URL"):
        parse_settings({"exchanges": {"huobi": {"ws_feed_url": "http://x/feed"}}}, "t.toml")


def test_bad_feed_url_on_other_exchange() -> None:
    with pytest.raises(ConfigError, match=r"exchanges\.binance\.ws_feed_url"):
        parse_settings({"exchanges": {"binance": {"ws_feed_url": "notaurl"}}}, "t.toml")


@pytest.mark.parametrize(
    ("section", "key", "url"),
    [
        ("metrics", "coingecko_url", "api.coingecko.com/api/v3"),
        ("metrics", "fear_greed_url", "ws://api.alternative.me"),
        ("database", "url", "mysql://h/db"),
    ],
)
def test_bad_other_urls(section: str, key: str, url: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: must be a URL starting with"):
        parse_settings({section: {key: url}}, "t.toml")


# ---------------------------------------------------------------------------------------------
# Exchanges: names, aliases, defaults


def test_unknown_exchange_section(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[exchanges.kraken]\nenabled = true\n")
    assert "exchanges.kraken: unknown exchange 'kraken'" in message


def test_aliases_are_accepted() -> None:
    s = parse_settings({"exchanges": {"gate": {"symbols": ["SOL/USDT"]}, "htx": {"book_depth": 5}}}, "t.toml")
    assert set(s.exchanges) == {"binance", "gateio", "huobi"}
    assert s.exchanges["gateio"].symbols == ("SOL/USDT",)
    assert s.exchanges["huobi"].book_depth == 5
    # Keys not given keep the default endpoints of the canonical exchange.
    assert s.exchanges["huobi"].ws_feed_url == DEFAULT_ENDPOINTS["huobi"]["ws_feed_url"]
    assert s.exchanges["gateio"].rest_url == DEFAULT_ENDPOINTS["gateio"]["rest_url"]


@pytest.mark.parametrize(("first", "second"), [("gate", "gateio"), ("huobi", "htx"), ("gateio", "GATE")])
def test_duplicate_alias_sections(tmp_path: Path, first: str, second: str) -> None:
    text = f"[exchanges.{first}]\nenabled = true\n\n[exchanges.{second}]\nenabled = false\n"
    message = load_error(tmp_path, text)
    assert f"exchanges.{second}: duplicates [exchanges.{first}]" in message


def test_canonical_exchange() -> None:
    assert [canonical_exchange(n) for n in ("Binance", " gate ", "HTX", "huobi")] == [
        "binance",
        "gateio",
        "huobi",
        "huobi",
    ]
    with pytest.raises(ConfigError, match="unknown exchange 'okx'"):
        canonical_exchange("okx")


def test_disabled_exchange_and_enabled_exchanges() -> None:
    s = parse_settings({"exchanges": {"binance": {"enabled": False}}}, "t.toml")
    assert set(s.enabled_exchanges()) == {"gateio", "huobi"}
    assert not s.exchanges["binance"].enabled


def test_lists_become_tuples() -> None:
    s = parse_settings({"exchanges": {"binance": {"channels": ["trades"]}}}, "t.toml")
    assert s.exchanges["binance"].channels == ("trades",)


# ---------------------------------------------------------------------------------------------
# Shards


@pytest.mark.parametrize("shard", ["1/1", "2/1", "0/0", "a/b", "1", "-1/2", "0/1/2", " 0/1", ""])
def test_bad_shard(shard: str) -> None:
    with pytest.raises(ConfigError, match=r"service\.shard: must be K/N with 0 <= K < N"):
        parse_settings({"service": {"shard": shard}}, "t.toml")


def test_good_shard_and_parse_shard() -> None:
    assert parse_settings({"service": {"shard": "3/4"}}, "t.toml").service.shard == "3/4"
    assert parse_shard("3/4") == (3, 4)
    with pytest.raises(ConfigError, match=r"^command line: --shard: must be K/N with 0 <= K < N, got '4/4'$"):
        parse_shard("4/4")


# ---------------------------------------------------------------------------------------------
# Frozen


def test_settings_are_frozen() -> None:
    s = defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.writer = s.writer  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.writer.max_batch_rows = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.exchanges["binance"].book_depth = 1  # type: ignore[misc]


def test_with_database_url_returns_a_copy() -> None:
    s = defaults()
    t = s.with_database_url("postgresql://h/db")
    assert (s.database.url, t.database.url) == ("", "postgresql://h/db")


def test_exchanges_mapping_is_read_only() -> None:
    s = defaults()
    with pytest.raises(TypeError):
        s.exchanges["binance"] = ExchangeSettings()  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Environment


def test_database_url_wins_over_db_parts(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nurl = 'postgresql://file@h/db'\n")
    env = {"DATABASE_URL": "postgresql://env@h/db", "DB_HOST": "other", "DB_USER": "x"}
    assert load_settings(path, env=env).database.url == "postgresql://env@h/db"


def test_environment_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nurl = 'postgresql://file@h/db'\n")
    assert load_settings(path, env={}).database.url == "postgresql://file@h/db"
    assert load_settings(path, env={"DB_HOST": "envhost"}).database.url == ("postgresql://postgres@envhost:5432/ingest")


@pytest.mark.parametrize("url", ["mysql://u@h/db", "localhost:5432/db", "notaurl"])
def test_database_url_must_be_postgres(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^environment: DATABASE_URL: must be a URL starting with"):
        database_url_from_env({"DATABASE_URL": url})


@pytest.mark.parametrize(("url", "problem"), [
    ("postgresql://u:p@localhost:abc/db", "not a valid URL"),
    ("postgresql://u:p@localhost:99999/db", "not a valid URL"),
    ("postgresql://u:p@[::1/db", "not a valid URL"),
    ("postgresql://u@h/db?sslmode=bogus", "sslmode must be one of"),
])
def test_database_url_must_parse(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^environment: DATABASE_URL: {problem}") as err:
        database_url_from_env({"DATABASE_URL": url})
    assert ":p@" not in str(err.value)


def test_db_host_with_a_port_is_refused_and_ipv6_is_bracketed() -> None:
    with pytest.raises(ConfigError, match="DB_HOST: must be a host name or an address without a port"):
        database_url_from_env({"DB_HOST": "db:5432", "DB_USER": "u"})
    assert database_url_from_env({"DB_HOST": "::1", "DB_USER": "u"}) == "postgresql://u@[::1]:5432/ingest"


def test_db_parts_are_assembled() -> None:
    env = {
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_NAME": "market",
        "DB_USER": "ingest",
        "DB_PASSWORD": "pw",
    }
    assert database_url_from_env(env) == "postgresql://ingest:pw@db.internal:6543/market"


def test_db_parts_defaults_and_no_password() -> None:
    assert database_url_from_env({"DB_NAME": "x"}) == "postgresql://postgres@localhost:5432/x"


def test_no_db_variables_means_no_url() -> None:
    assert database_url_from_env({}) == ""
    assert database_url_from_env({"DB_PASSWORD": "pw", "DB_PORT": "1"}) == ""
    assert apply_env(defaults(), {}).database.url == ""


@pytest.mark.parametrize("password", ["p@ss:w/rd?#%&=+ é", "a b", "%41", "@@@", "-\\'\""])
def test_db_password_is_url_escaped(password: str) -> None:
    url = database_url_from_env({"DB_HOST": "h", "DB_USER": "us@r:x", "DB_PASSWORD": password})
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("h", 5432, "/ingest")
    assert unquote(parts.username or "") == "us@r:x"
    assert unquote(parts.password or "") == password
    # The redacted form hides it whole.
    redacted = redact_dsn(url)
    assert "***@h:5432" in redacted
    assert parts.password
    assert parts.password not in redacted.replace("***", "")


def test_db_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cr3t/+=\n", encoding="utf-8")  # a docker secret ends with a newline
    env = {
        "DB_HOST": "h",
        "DB_USER": "u",
        "DB_PASSWORD": "ignored",
        "DB_PASSWORD_FILE": str(secret),
    }
    assert database_url_from_env(env) == "postgresql://u:s3cr3t%2F%2B%3D@h:5432/ingest"


def test_db_password_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    env = {"DB_HOST": "h", "DB_PASSWORD_FILE": str(missing)}
    with pytest.raises(ConfigError, match=r"^environment: DB_PASSWORD_FILE: cannot read .*no-such-secret"):
        database_url_from_env(env)


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "54 32", "5432x"])
def test_db_port_invalid(port: str) -> None:
    with pytest.raises(ConfigError, match=rf"^environment: DB_PORT: must be a port number, got {port!r}"):
        database_url_from_env({"DB_HOST": "h", "DB_PORT": port})


def test_db_sslmode_and_rootcert() -> None:
    s = apply_env(defaults(), {"DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/etc/ca.pem"})
    assert (s.database.sslmode, s.database.sslrootcert) == ("verify-full", "/etc/ca.pem")


@pytest.mark.parametrize("mode", ["strict", "VERIFY-FULL", "true"])
def test_db_sslmode_invalid(mode: str) -> None:
    with pytest.raises(ConfigError, match=r"^environment: DB_SSLMODE: must be one of"):
        apply_env(defaults(), {"DB_SSLMODE": mode})


def test_coingecko_key_and_log_level_from_env() -> None:
    s = apply_env(defaults(), {"COINGECKO_API_KEY": "CG-abc", "INGEST_LOG_LEVEL": "debug"})
    assert (s.metrics.coingecko_api_key, s.logging.level) == ("CG-abc", "DEBUG")


def test_log_level_invalid() -> None:
    with pytest.raises(ConfigError, match=r"^environment: INGEST_LOG_LEVEL: must be"):
        apply_env(defaults(), {"INGEST_LOG_LEVEL": "verbose"})


def test_ingest_config_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[health]\nport = 9999\n", name="other.toml")
    s = load_settings(None, env={"INGEST_CONFIG": str(path)})
    assert (s.health.port, s.source) == (9999, str(path))
    # An explicit path wins over INGEST_CONFIG.
    assert load_settings(INGEST_TOML, env={"INGEST_CONFIG": str(path)}).health.port == 8080


def test_ingest_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(None, env={"INGEST_CONFIG": str(tmp_path / "gone.toml")})


def test_no_file_anywhere_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config/ingest.toml here
    assert load_settings(None, env={}) == defaults()


def test_default_file_is_found_from_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert load_settings(None, env={}).source == "config/ingest.toml"


# ---------------------------------------------------------------------------------------------
# Redaction for display


def test_to_display_redacts_secrets() -> None:
    s = apply_env(
        defaults(),
        {"DATABASE_URL": "postgresql://u:hunter2@h:5432/db", "COINGECKO_API_KEY": "CG-topsecret"},
    )
    shown = to_display(s)
    assert shown["database"]["url"] == "postgresql://u:***@h:5432/db"
    assert shown["metrics"]["coingecko_api_key"] == "***"
    text = repr(shown)
    assert "hunter2" not in text
    assert "CG-topsecret" not in text
    assert shown["exchanges"]["binance"]["symbols"] == ["BTC/USDT", "ETH/USDT"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", ""),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:p%40ss@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u@h/db?password=Hunter2&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u:p@h:abc/db", "postgresql://u:***@h:abc/db"),  # unparsable: still redacted
    ],
)
def test_redact_dsn(url: str, expected: str) -> None:
    assert redact_dsn(url) == expected


@pytest.mark.parametrize(
    "build",
    [
        lambda: database_url_from_env({"DATABASE_URL": "mysql://u:leaky-pw@h/db"}),
        lambda: parse_settings({"database": {"url": "postgresq://u:leaky-pw@h/db"}}, "t.toml"),
    ],
)
def test_rejected_url_does_not_echo_password(build: typing.Callable[[], object]) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert "leaky-pw" not in str(info.value)
