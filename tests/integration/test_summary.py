"""Title and summary: the offline extractive default, and the OpenAI-compatible provider against
a fake endpoint on loopback (timeout, broken answers, fallback), stored on the ticket and never
shown to the customer."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from gateway.background import run_summary
from gateway.config import SummarizerConfig, embedded_default
from gateway.runtime import Runtime
from gateway.summarizer import OpenAICompatibleSummarizer, make_summarizer
from tests.support.fake_llm import FakeLLM
from tickets import services
from tickets.customer_view import customer_view
from tickets.models import Ticket
from tickets.summary import ExtractiveSummarizer, SummaryInput

ASK = SummaryInput(
    subject="",
    customer_texts=(
        "Hi there! My parcel never arrived. Order 4411 was sent on May 2 by DHL.",
        "Thanks. I checked with the neighbours too, nobody has the parcel.",
    ),
)


def test_offline_summary_keeps_the_customers_own_sentences_with_the_facts():
    result = ExtractiveSummarizer().summarize(ASK)
    assert result.source == "offline"
    assert result.title == "My parcel never arrived."  # not the greeting
    assert result.summary.startswith("My parcel never arrived.")
    assert "Order 4411 was sent on May 2 by DHL." in result.summary
    assert "Thanks." not in result.summary
    # Nothing invented: every sentence is one the customer wrote.
    written = " ".join(ASK.customer_texts)
    for sentence in re.split(r"(?<=[.!?])\s+", result.summary):
        assert sentence in written


def test_offline_title_is_the_subject_the_customer_wrote():
    result = ExtractiveSummarizer().summarize(
        SummaryInput(subject="Refund for order 77", customer_texts=("Please refund it.",))
    )
    assert result.title == "Refund for order 77"
    assert result.summary == "Please refund it."
    assert ExtractiveSummarizer().summarize(SummaryInput("", ())).summary == ""
    # A chat's subject is its first line, greeting and all: the title skips the greeting.
    chat = "Hi! My order #4411 arrived damaged. Can you send a new one?"
    assert ExtractiveSummarizer().summarize(SummaryInput(chat, (chat,))).title == (
        "My order #4411 arrived damaged."
    )


def test_provider_sends_the_customers_words_and_uses_the_answer(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test-123")
    with FakeLLM() as llm:
        llm.reply = (
            "```json\n" + json.dumps({"title": "Lost parcel 4411", "summary": "Lost."}) + "\n```"
        )
        summarizer = make_summarizer(
            SummarizerConfig(
                provider="openai", base_url=llm.base_url, model="tiny", api_key_env="FAKE_LLM_KEY"
            )
        )
        result = summarizer.summarize(ASK)
    assert (result.title, result.summary, result.source) == ("Lost parcel 4411", "Lost.", "tiny")
    [request] = llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer sk-test-123"
    assert request["json"]["model"] == "tiny"
    assert "Order 4411" in request["json"]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("how", "expected"),
    [("slow", "timeout"), ("500", "error"), ("not json", "garbage")],
)
def test_provider_falls_back_to_offline_when_the_endpoint_fails(how, expected, caplog):
    with FakeLLM() as llm:
        if how == "slow":
            llm.delay = 2.0
        elif how == "500":
            llm.status = 500
        else:
            llm.reply = "Sure! Here is a summary of the conversation"
        summarizer = OpenAICompatibleSummarizer(llm.base_url, "tiny", api_key=None, timeout=0.5)
        started = time.monotonic()
        result = summarizer.summarize(ASK)
        took = time.monotonic() - started
    assert result.source == "offline"
    assert "Order 4411" in result.summary
    assert took < 1.5  # the timeout, not the endpoint, decided
    assert "using the offline one" in caplog.text


def test_provider_summary_is_stored_on_the_ticket_and_never_in_the_customer_view(
    tmp_path, monkeypatch
):
    with FakeLLM() as llm:
        llm.reply = json.dumps(
            {"title": "VIP customer, lost parcel", "summary": "Angry VIP; offer refund."}
        )
        config = embedded_default().model_copy(
            update={
                "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
                "summarizer": SummarizerConfig(
                    provider="openai", base_url=llm.base_url, model="tiny"
                ),
            }
        )
        rt = Runtime.create(config)
        now = dt.datetime.now(dt.UTC)
        with rt.unit_of_work() as session:
            app = services.get_app(session, "demo")
            agent = services.add_agent(session, app, "ana@example.com", "Ana", now)
            customer = services.customer_by_address(session, app, "c@example.com", now)
            conversation, _ = services.start_conversation(
                session, app, customer, "chat", "Where is order 4411?", now
            )
            ticket_id = services.convert(session, conversation, agent, now).id
        assert run_summary(rt, ticket_id) is True
        assert run_summary(rt, ticket_id) is False  # done: safe to run twice
        assert len(llm.requests) == 1
    with rt.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert ticket.title == "VIP customer, lost parcel"
        assert ticket.summary == "Angry VIP; offer refund."
        app = services.get_app(session, "demo")
        shown = json.dumps(customer_view(app, ticket.conversation).to_json())
    assert "VIP" not in shown and "refund" not in shown
    rt.close()
