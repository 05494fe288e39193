"""With HF_HUB_OFFLINE=1 nothing opens a network connection: a hub model, a hub dataset card and `alignkit doctor`
fail or report from the cache only. Any connect attempt fails the test."""

import socket

import pytest

from alignkit.cli import main


@pytest.fixture()
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network connection attempted while offline: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_offline_hub_recipe_fails_in_one_line_without_touching_the_network(no_network, capsys):
    assert main(["train", "dpo-qwen", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Qwen/Qwen2.5-0.5B-Instruct" in err[0] and "HF_HUB_OFFLINE=1" in err[0]
    assert no_network == []


def test_offline_hub_dataset_card_fails_without_touching_the_network(no_network):
    from alignkit.data.cards import load_split
    from alignkit.errors import AlignkitError

    with pytest.raises(AlignkitError, match="not in the local cache.*sharegpt-pairs-smol"):
        load_split("ultrafeedback_binarized", "test", max_samples=2)
    assert no_network == []


def test_doctor_offline_does_not_probe_the_hub(no_network, capsys):
    from alignkit import doctor

    doctor.run([doctor.check_hub, doctor.check_versions])
    assert "offline (HF_HUB_OFFLINE" in capsys.readouterr().out and no_network == []
