"""Facts read from a model's config: reaching the Hugging Face Hub fails fast and says why."""

import socket
import time

import pytest

from ows import model_facts
from ows.errors import UsageError


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_offline_mode_is_read_from_the_environment_at_call_time(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_facts.hub_unreachable() == "HF_HUB_OFFLINE is set"


def test_a_host_that_does_not_resolve_is_unreachable_and_says_which(online, monkeypatch):
    def fail(host, port):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    problem = model_facts.hub_unreachable()
    assert problem is not None and "cannot be reached" in problem and "Name or service not known" in problem


def test_a_host_that_resolves_or_answers_slowly_is_left_to_the_download(online, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [])
    assert model_facts.hub_unreachable() is None
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: time.sleep(1.0))
    assert model_facts.hub_unreachable(timeout=0.05) is None


def test_ows_memory_on_an_unreachable_hub_id_fails_without_downloading(online, monkeypatch):
    import transformers

    monkeypatch.setattr(model_facts, "cached_hub_config", lambda model: None)
    monkeypatch.setattr(model_facts, "hub_unreachable", lambda: "huggingface.co cannot be reached: no DNS")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(UsageError, match="cannot be reached: no DNS"):
        model_facts.read_model_config("some-org/some-model")



def test_a_malformed_hub_id_is_not_in_the_cache_rather_than_an_exception():
    assert model_facts.cached_hub_config("a/b/c") is None


def _hub_cache(tmp_path, monkeypatch, folder) -> str:
    """A Hugging Face cache in ``tmp_path`` holding ``folder`` as hub id ``some-org/tiny``."""
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--some-org--tiny" / "snapshots" / "abc"
    shutil.copytree(folder, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(model_facts, "_OFFLINE_CHECKED", set())
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test (the switch sets it to 1)
    return "some-org/tiny"


def test_a_cached_hub_id_with_no_hub_to_reach_loads_from_the_cache_at_once(online, monkeypatch, tmp_path,
                                                                           tiny_model_dir, caplog):
    import os

    from huggingface_hub import constants

    from ows.loading import load_model_and_tokenizer, resolve_model_path

    model_id = _hub_cache(tmp_path, monkeypatch, tiny_model_dir)
    monkeypatch.setattr(model_facts, "hub_unreachable", lambda: "huggingface.co cannot be reached: no DNS")
    with caplog.at_level("WARNING", logger="ows.model_facts"):
        assert resolve_model_path(model_id) == model_id
    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "loading some-org/tiny from the local Hugging Face cache" in caplog.text
    # offline mode refuses every request, so this load can only have read the cache
    model, tokenizer = load_model_and_tokenizer(model_id)
    assert model.config.num_hidden_layers > 0 and tokenizer.pad_token is not None


def test_a_cached_hub_id_stays_online_when_the_hub_answers_and_an_uncached_id_is_not_checked(online, monkeypatch,
                                                                                             tmp_path, tiny_model_dir):
    from huggingface_hub import constants

    model_id = _hub_cache(tmp_path, monkeypatch, tiny_model_dir)
    calls = []
    monkeypatch.setattr(model_facts, "hub_unreachable", lambda: calls.append(1))  # None: reachable
    assert model_facts.use_cache_when_offline(model_id) is False
    assert model_facts.use_cache_when_offline(model_id) is False and len(calls) == 1  # checked once per id
    assert model_facts.use_cache_when_offline("some-org/not-cached") is False and len(calls) == 1
    assert not constants.HF_HUB_OFFLINE
