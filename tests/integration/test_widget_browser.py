"""The chat widget as a visitor sees it, in Debian's chromium under the page's own policy.

What is asserted is what a person sees: whether the address form is on screen, the words of an
error, whether what they typed is still in the box, and the contrast of every text on the page
(WCAG AA: at least 4.5:1), measured from the browser's computed colours.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email import policy as email_policy
from typing import Any

from sqlalchemy import select

from channels.chat.widget import MAX_TEXT
from tests.support.browser import watch
from tests.support.http import RunningHttp
from tickets import services
from tickets.models import Conversation, Outbox

BROKEN_LINK = "This chat link does not work"
CHAT_GONE = "This chat can no longer be found"

# For every visible element with text of its own (and every input's placeholder): its colour,
# the first opaque background behind it, and their contrast ratio (WCAG 2 relative luminance).
CONTRAST_JS = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const behind = el => {
    for (let e = el; e; e = e.parentElement) {
      const bg = getComputedStyle(e).backgroundColor, a = rgb(bg)[3];
      if (a === undefined || a > 0) return bg;
    }
    return "rgb(255, 255, 255)";
  };
  const ratio = (fg, bg) => {
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const out = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (!el.checkVisibility()) continue;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (own) {
      const fg = getComputedStyle(el).color, bg = behind(el);
      out.push({what: el.id || el.className || el.tagName, text: el.textContent.trim().slice(0, 40),
                ratio: ratio(fg, bg), fg, bg});
    }
    if (el.placeholder) {
      const fg = getComputedStyle(el, "::placeholder").color, bg = behind(el);
      out.push({what: el.id + "::placeholder", text: el.placeholder.slice(0, 40),
                ratio: ratio(fg, bg), fg, bg});
    }
  }
  return out;
}"""


def widget(browser: Any, http: RunningHttp, query: str = "") -> tuple[Any, list[str]]:
    """A new visitor's browser (its own storage) on the widget page, with a clock the test can
    move forward to the page's next 3-second refresh."""
    page = browser.new_context().new_page()
    problems = watch(page)
    page.clock.install()
    page.goto(f"{http.url}/widget/demo{query}")
    return page, problems


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.click("#send button")


def hidden_but_displayed(page: Any) -> list[str]:
    """Elements the page marks `hidden` that CSS shows anyway."""
    return list(
        page.evaluate(
            "[...document.querySelectorAll('[hidden]')]"
            ".filter(e => getComputedStyle(e).display !== 'none').map(e => e.id)"
        )
    )


def test_the_address_form_shows_only_while_the_team_has_no_address(browser, http_api):
    page, problems = widget(browser, http_api)
    page.wait_for_load_state()
    assert page.is_hidden("#reach") and hidden_but_displayed(page) == []  # no chat yet
    say(page, "Hello, my parcel is late")
    page.wait_for_selector("#log .m.customer")
    assert page.is_visible("#email")  # the chat began: we may ask where to write
    page.fill("#email", "late@example.com")
    page.click("#reach button")
    page.wait_for_selector("#pending", state="visible")
    assert page.is_hidden("#reach") and page.is_hidden("#notice")
    assert hidden_but_displayed(page) == []
    page.reload()  # the server says an address is pending: the form stays away
    page.wait_for_selector("#log .m.customer")
    assert page.is_hidden("#reach") and page.is_visible("#pending")
    assert hidden_but_displayed(page) == [] and problems == []


def test_every_text_has_a_contrast_of_at_least_4_5(browser, http_api):
    page, problems = widget(browser, http_api)
    say(page, "Is the name above this readable?")
    page.wait_for_selector("#log .m.customer .who")
    runtime = http_api.runtime
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        ana = services.add_agent(s, app, "ana@example.com", "Ana", runtime.clock())
        conversation = s.scalars(select(Conversation)).one()
        services.add_agent_message(s, conversation, ana, "It is now.", runtime.clock())
    page.clock.fast_forward(3000)  # the page's next refresh
    page.wait_for_selector("#log .m.team .who")
    page.wait_for_selector("#email")
    measured = page.evaluate(CONTRAST_JS)
    seen = {m["text"] for m in measured}
    assert {"You", "Ana", "Send", "Save"} <= seen, seen
    assert any(m["what"] == "email::placeholder" for m in measured)
    low = [m for m in measured if m["ratio"] < 4.5]
    assert low == [], low
    # The customer's name over their own blue bubble (it was 1.4:1).
    [name] = [m for m in measured if m["text"] == "You"]
    assert name["ratio"] >= 4.5 and problems == [], (name, problems)


def test_a_refused_message_is_explained_in_words_and_kept_in_the_box(browser, http_api):
    page, problems = widget(browser, http_api)
    say(page, "First message")
    page.wait_for_selector("#log .m.customer")
    too_long = "x" * (MAX_TEXT + 1)
    say(page, too_long)
    page.wait_for_selector("#notice", state="visible")
    shown = page.inner_text("#notice")
    assert "object" not in shown.lower() and re.search(r"at most \d+ characters", shown), shown
    assert page.input_value("#text") == too_long  # nothing the visitor wrote is thrown away
    del problems  # the browser logs the refused request itself; the page handled it


def test_a_broken_chat_link_says_so_and_keeps_the_chat_this_browser_has(browser, http_api):
    page, problems = widget(browser, http_api)
    say(page, "My earlier words")
    page.wait_for_selector("#log .m.customer")
    # A link cut short by a mail program (not even a well-formed token), then a well-formed
    # link to no conversation: each says what is wrong, and the chat of this browser stays.
    for link in ("?c=abc-def", "?c=" + "a" * 40):
        page.goto(f"{http_api.url}/widget/demo{link}")
        page.wait_for_selector("#notice", state="visible")
        assert BROKEN_LINK in page.inner_text("#notice")
        page.wait_for_selector("#log .m.customer")
        assert "My earlier words" in page.inner_text("#log")
    say(page, "Still here")
    page.wait_for_selector("#log .m.customer:has-text('Still here')")
    assert "My earlier words" in page.inner_text("#log") and page.is_hidden("#notice")
    del problems

    fresh, _ = widget(browser, http_api, "?c=abc-def")  # no chat of its own to go on with
    fresh.wait_for_selector("#notice", state="visible")
    assert BROKEN_LINK in fresh.inner_text("#notice")
    assert "[object" not in fresh.inner_text("body")
    say(fresh, "Starting over")
    fresh.wait_for_selector("#log .m.customer")
    assert "Starting over" in fresh.inner_text("#log") and fresh.is_hidden("#notice")


def test_a_chat_that_moved_away_keeps_the_unsent_text_and_says_why(browser, http_api):
    """The visitor's address was confirmed from another device (their phone's mail): the chat
    moved to the address's owner, and this tab's link no longer opens it."""
    page, _ = widget(browser, http_api)
    say(page, "Hello from the laptop")
    page.wait_for_selector("#log .m.customer")
    page.fill("#email", "moved@example.com")
    page.click("#reach button")
    page.wait_for_selector("#pending", state="visible")
    with http_api.runtime.unit_of_work() as s:
        raw = s.scalars(select(Outbox.raw).where(Outbox.kind == "address_confirmation")).one()
    body = message_from_bytes(raw, policy=email_policy.default)
    text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = re.findall(r"/widget/demo/confirm\?t=[\w-]+", text)
    phone = browser.new_context().new_page()
    phone.goto(http_api.url + link)
    phone.click("#confirm button")
    phone.wait_for_url(re.compile(r"/widget/demo$"))

    say(page, "Are you still there?")
    page.wait_for_selector("#notice", state="visible")
    assert CHAT_GONE in page.inner_text("#notice")
    assert page.input_value("#text") == "Are you still there?"
    page.click("#send button")  # as the notice says: Send again starts a new chat with it
    page.wait_for_selector("#log .m.customer:has-text('Are you still there?')")
    assert page.input_value("#text") == "" and page.is_hidden("#notice")
