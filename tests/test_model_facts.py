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
