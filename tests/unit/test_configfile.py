"""Typed YAML configuration files of central and edged, and their documentation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from central.config import CentralConfig
from central.config import load_config as load_central
from edged.config import EdgeConfig
from edged.config import load_config as load_edge
from edged.configfile import ConfigError, describe, from_mapping, load

ROOT = Path(__file__).resolve().parents[2]
SITE_CONFIGS = ROOT / "site-configs"
DOC = ROOT / "docs" / "configuration.md"


def write(tmp_path: Path, text: str, name: str = "conf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(cls: type, path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load(cls, path)
    return str(err.value)


# -- shipped files ------------------------------------------------------------------


def test_shipped_central_config_loads() -> None:
    cfg = load_central(SITE_CONFIGS / "central.yaml")
    assert isinstance(cfg, CentralConfig)
    assert cfg.api_port == 8700
    assert cfg.hub_endpoint == "tcp://127.0.0.1:8701"
    assert cfg.state_dir == Path("/var/lib/skerry/central")
    assert cfg.max_frame_bytes == 1048576


@pytest.mark.parametrize("site", ["edge-a", "edge-b"])
def test_shipped_edge_configs_load(site: str) -> None:
    cfg = load_edge(SITE_CONFIGS / f"{site}.yaml")
    assert isinstance(cfg, EdgeConfig)
    assert cfg.site == site
    assert cfg.state_dir == Path(f"/var/lib/skerry/{site}")
    assert cfg.reconcile_interval_s == 10.0
    assert isinstance(cfg.reconcile_interval_s, float)
    assert cfg.image_dir == Path("images/build")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_central(write(tmp_path, ""))
    assert cfg == CentralConfig()
    edge = load_edge(write(tmp_path, "site: x1\n", "edge.yaml"))
    assert edge == EdgeConfig(site="x1")


def test_int_given_for_float_is_coerced(tmp_path: Path) -> None:
    cfg = load_edge(write(tmp_path, "site: a\nreconcile_interval_s: 3\n"))
    assert cfg.reconcile_interval_s == 3.0
    assert isinstance(cfg.reconcile_interval_s, float)


# -- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "text", "key"),
    [
        (CentralConfig, "api_prot: 8700\n", "api_prot"),
        (CentralConfig, "api_port: 8700\nkeep_generation: 3\n", "keep_generation"),
        (EdgeConfig, "site: a\nreconcile_interval: 5\n", "reconcile_interval"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path: Path, cls: type, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = config_error(cls, path)
    assert repr(key) in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("cls", "text", "key"),
    [
        (CentralConfig, "api_port: '8700'\n", "api_port"),
        (CentralConfig, "keep_generations: 2.5\n", "keep_generations"),
        (CentralConfig, "api_port: true\n", "api_port"),
        (CentralConfig, "heartbeat_interval_s: true\n", "heartbeat_interval_s"),
        (CentralConfig, "resend_after_s: fast\n", "resend_after_s"),
        (CentralConfig, "state_dir: 5\n", "state_dir"),
        (CentralConfig, "state_dir: ''\n", "state_dir"),
        (CentralConfig, "log_level: 10\n", "log_level"),
        (EdgeConfig, "site: a\nstop_grace_s: false\n", "stop_grace_s"),
        (EdgeConfig, "site: a\nmax_frame_bytes: '2048'\n", "max_frame_bytes"),
        (EdgeConfig, "site: 12\n", "site"),
    ],
)
def test_wrong_type_names_key(tmp_path: Path, cls: type, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = config_error(cls, path)
    assert repr(key) in message
    assert str(path) in message


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "api_port: [8700\n  broken: {\n")
    message = config_error(CentralConfig, path)
    assert str(path) in message
    assert "YAML" in message


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- api_port\n- 8700\n")
    assert str(path) in config_error(CentralConfig, path)


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(CentralConfig, path)
    assert str(path) in message
    with pytest.raises(ConfigError):
        load_edge(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("site: Edge_A\n", "site"),
        ("site: -edge\n", "site"),
        ("site: ''\n", "site"),
        ("reconcile_interval_s: 5\n", "site"),  # site is required
        ("site: a\nreconcile_interval_s: -1\n", "reconcile_interval_s"),
        ("site: a\nheartbeat_interval_s: 0\n", "heartbeat_interval_s"),
        ("site: a\ncentral_timeout_s: -0.5\n", "central_timeout_s"),
        ("site: a\nstop_grace_s: -1\n", "stop_grace_s"),
        ("site: a\nvirt_type: xen\n", "virt_type"),
        ("site: a\nmax_frame_bytes: 100\n", "max_frame_bytes"),
    ],
)
def test_edge_validate_errors(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = config_error(EdgeConfig, path)
    assert repr(key) in message
    assert str(path) in message


def test_edge_stop_grace_zero_is_valid(tmp_path: Path) -> None:
    assert load_edge(write(tmp_path, "site: a\nstop_grace_s: 0\n")).stop_grace_s == 0.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("api_port: 0\n", "api_port"),
        ("api_port: 70000\n", "api_port"),
        ("heartbeat_interval_s: -1\n", "heartbeat_interval_s"),
        ("site_down_after_s: 0\n", "site_down_after_s"),
        ("resend_after_s: -2.5\n", "resend_after_s"),
        ("keep_generations: 0\n", "keep_generations"),
        ("max_frame_bytes: 10\n", "max_frame_bytes"),
    ],
)
def test_central_validate_errors(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = config_error(CentralConfig, path)
    assert repr(key) in message
    assert str(path) in message


def test_from_mapping_source_in_message() -> None:
    with pytest.raises(ConfigError, match=r"^<test>: unknown key 'nope'"):
        from_mapping(CentralConfig, {"nope": 1}, "<test>")


def test_describe_lists_every_field_with_doc() -> None:
    for cls in (CentralConfig, EdgeConfig):
        rows = describe(cls)
        assert [r[0] for r in rows] == list(cls.__dataclass_fields__)
        for key, _default, doc in rows:
            assert doc, f"{cls.__name__}.{key} has no doc"


# -- documentation ------------------------------------------------------------------


def default_forms(default: Any) -> set[str]:
    """Ways the documentation may spell a default."""
    if isinstance(default, bool):
        return {str(default).lower()}
    if isinstance(default, float):
        forms = {repr(default), f"{default:g}"}
        return forms
    if isinstance(default, int):
        return {str(default), f"{default:,}", f"{default:_}"}
    if isinstance(default, Path):
        return {str(default)}
    if default == "":
        return {'""', "''", "required", "(none)", "none", "empty"}
    return {str(default)}


@pytest.mark.parametrize("cls", [CentralConfig, EdgeConfig], ids=lambda c: c.__name__)
def test_every_key_documented_with_default(cls: type) -> None:
    assert DOC.is_file(), f"{DOC} does not exist"
    lines = DOC.read_text().splitlines()
    missing = []
    for key, default, _doc in describe(cls):
        pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])")
        hits = [i for i, line in enumerate(lines) if pattern.search(line)]
        if not hits:
            missing.append(f"{key} (not mentioned)")
            continue
        forms = default_forms(default)
        # The default is on the key's line (a table row) or just below it (a section).
        near = any(
            any(form.lower() in "\n".join(lines[i : i + 6]).lower() for form in forms) for i in hits
        )
        if not near:
            missing.append(f"{key} (default {default!r} not next to it)")
    assert not missing, f"{cls.__name__} keys not documented in {DOC.name}: {missing}"
