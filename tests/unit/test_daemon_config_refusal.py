"""Both daemons refuse to start on a bad config file, naming the file and the key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from central.main import main as central_main
from edged.main import main as edged_main


@pytest.mark.parametrize(
    ("main", "text", "needle"),
    [
        (central_main, "api_port: 8700\nhub_endpont: tcp://127.0.0.1:1\n", "'hub_endpont'"),
        (central_main, "api_port: eighty\n", "'api_port'"),
        (edged_main, "site: edge-a\nreconcile_interval: 3\n", "'reconcile_interval'"),
        (edged_main, "site: Edge A\n", "'site'"),
        (edged_main, "site: [unclosed\n", "not valid YAML"),
        (edged_main, "site: edge-a\nphysnet_uplinks: physnet1\n", "physnet_uplinks"),
        (edged_main, "site: edge-a\nsriov_physnets: physnet1=\n", "sriov_physnets"),
        (edged_main, "site: edge-a\ntunnel_local_ip: 198.51.100.300\n", "'tunnel_local_ip'"),
    ],
)
def test_bad_config_refused(
    main, text: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert str(path) in err


def test_central_refuses_a_malformed_hub_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() sets up logging (replacing the root handlers); give them back afterwards.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    key = tmp_path / "hub.key"
    key.write_text("public: not-a-key\n")
    config = tmp_path / "central.yaml"
    config.write_text(f"state_dir: {tmp_path}\nhub_secret_key_file: {key}\n")
    assert central_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(key) in err
    assert "public key" in err
