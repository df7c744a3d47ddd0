"""API-key policy and the serving settings, without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slp_pipeline.auth import ApiKeys, Unauthorized, check_exposure, is_loopback, keys_from
from slp_pipeline.cli import main
from slp_pipeline.config import PipelineConfig
from slp_pipeline.local_ray import is_loopback_ip

REPO = Path(__file__).resolve().parents[1]
KEY = "k" * 16
OTHER = "o" * 20


def test_keys_come_from_the_config_and_the_environment() -> None:
    assert keys_from([KEY], {"SLP_API_KEY": f" {OTHER} , {'x' * 16},"}) == [KEY, OTHER, "x" * 16]
    assert keys_from([], {}) == []


@pytest.mark.parametrize("bad", ["short", "with space" * 3, "é" * 20, "a,b" * 8])
def test_weak_or_malformed_keys_fail_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="API key #1"):
        keys_from([bad], {})


def test_writes_need_a_configured_key_and_signing_only_if_asked() -> None:
    keys = ApiKeys.from_keys([KEY, OTHER])
    for token in (None, "", "wrong-key-wrong-key", KEY + "x", KEY[:-1]):
        with pytest.raises(Unauthorized) as err:
            keys.check(token, write=True)
        assert err.value.status == 401 and err.value.headers == {"WWW-Authenticate": "Bearer"}
    keys.check(KEY, write=True)
    keys.check(OTHER, write=True)
    keys.check(None, write=False)  # /v1/sign stays open by default
    strict = ApiKeys.from_keys([KEY], sign_requires_key=True)
    with pytest.raises(Unauthorized):
        strict.check(None, write=False)
    strict.check(KEY, write=False)


def test_without_keys_everything_is_open_which_only_loopback_allows() -> None:
    open_service = ApiKeys.from_keys([])
    open_service.check(None, write=True)
    assert "no API key" in open_service.describe()
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"):
        check_exposure(host, open_service)
    for host in ("0.0.0.0", "::", "192.0.2.2", "example.org"):
        with pytest.raises(ValueError, match="refusing to serve on .* without an API key"):
            check_exposure(host, open_service)
        check_exposure(host, ApiKeys.from_keys([KEY]))
    with pytest.raises(ValueError, match="sign_requires_key"):
        ApiKeys.from_keys([], sign_requires_key=True)


def test_only_digests_are_kept() -> None:
    keys = ApiKeys.from_keys([KEY])
    assert KEY not in repr(keys) and KEY.encode() not in b"".join(keys.digests)
    assert "1 API key(s)" in keys.describe()


@pytest.mark.parametrize(
    ("ip", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("fe80::1%eth0", False),
    ],
)
def test_loopback_addresses(ip: str, loopback: bool) -> None:
    assert is_loopback_ip(ip) == loopback
    assert is_loopback(ip) == loopback


def test_serving_settings_are_checked() -> None:
    base = {"text2pose": {}, "renderers": {"s": "skeleton"}, "default_renderer": "s"}
    config = PipelineConfig.from_dict({**base, "api_keys": [KEY], "cors_origins": ["https://a.b"]})
    assert KEY not in repr(config)
    assert config.key_policy().enabled
    for bad in (["https://a.b/"], ["a.b"], ["https://a.b/path"]):
        with pytest.raises(ValueError, match="cors_origins"):
            PipelineConfig.from_dict({**base, "cors_origins": bad})
    with pytest.raises(ValueError, match="max_signers"):
        PipelineConfig.from_dict({**base, "max_signers": 0})


def test_slp_serve_refuses_a_public_address_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """One line, exit 2, before Ray is started (no Ray process is needed for this test)."""
    monkeypatch.delenv("SLP_API_KEY", raising=False)
    data = yaml.safe_load((REPO / "configs/serve/gpu.yaml").read_text())
    path = tmp_path / "public.yaml"
    path.write_text(yaml.safe_dump(data))
    assert data["http_options"]["host"] == "0.0.0.0"
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to serve on 0.0.0.0 without an API key" in err and "\n" not in err
