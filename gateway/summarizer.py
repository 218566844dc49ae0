"""The OpenAI-compatible summarizer: a chat-completions endpoint from config, with a timeout and
the offline summarizer as fallback, so a slow or broken endpoint never leaves a ticket without a
summary.

Plain `urllib` is enough for one JSON POST; the key comes from the environment variable the
config names and is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

from gateway.config import SummarizerConfig
from tickets.summary import ExtractiveSummarizer, Summarizer, Summary, SummaryInput

log = logging.getLogger(__name__)

PROMPT = (
    "You write internal notes for a customer support team. From the customer's messages below, "
    'answer with JSON only: {"title": "<at most 8 words>", "summary": "<at most 3 sentences: '
    'what the customer wants and any facts such as order numbers>"}. Write in the language of '
    "the messages."
)


class SummarizerUnavailable(Exception):
    pass


class OpenAICompatibleSummarizer:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None,
        timeout: float,
        fallback: Summarizer | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.timeout = timeout
        self.fallback = fallback or ExtractiveSummarizer()

    def summarize(self, item: SummaryInput) -> Summary:
        if not item.customer_texts:
            return self.fallback.summarize(item)
        try:
            return self._ask(item)
        except SummarizerUnavailable as exc:
            log.warning("summarizer at %s unavailable, using the offline one: %s", self.url, exc)
            return self.fallback.summarize(item)

    def _ask(self, item: SummaryInput) -> Summary:
        conversation = f"Subject: {item.subject}\n\n" + "\n\n".join(item.customer_texts)
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": PROMPT},
                    {"role": "user", "content": conversation[:20_000]},
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 - the URL is configured http(s)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                payload = json.loads(response.read(1_000_000))
            content = payload["choices"][0]["message"]["content"]
            data = json.loads(_strip_fence(content))
            title, summary = str(data["title"]).strip(), str(data["summary"]).strip()
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            # OSError covers timeouts, refused connections and HTTP errors (urllib's are OSErrors).
            raise SummarizerUnavailable(f"{type(exc).__name__}: {exc}") from None
        if not title or not summary:
            raise SummarizerUnavailable("empty title or summary")
        return Summary(title=title[:300], summary=summary[:2000], source=self.model)


def _strip_fence(content: str) -> str:
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    return text


def make_summarizer(config: SummarizerConfig) -> Summarizer:
    if config.provider == "openai":
        assert config.base_url and config.model  # the config validator made sure
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        return OpenAICompatibleSummarizer(
            config.base_url, config.model, api_key=key, timeout=config.timeout_seconds
        )
    return ExtractiveSummarizer()
