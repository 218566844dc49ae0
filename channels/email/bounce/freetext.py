"""The free-text notices of MTAs without (or before) RFC 3464: one parser per layout.

Postfix, Exim, qmail, Exchange, Gmail and Yahoo each have a known layout; a generic parser
catches the rest. Each returns the failed recipients and the most telling SMTP reply, or None
when the text is not in its layout. Callers only consult them for mail from a mail daemon.
"""

from __future__ import annotations

import re
from email.message import Message

from channels.email.addresses import header_addresses
from channels.email.bounce.text import (
    ADDR_RE,
    CHALLENGE_RE,
    DAEMON_LOCAL_RE,
    RETURN_PATH_LOCAL_RE,
    SMTP_CODE_RE,
    STATUS_RE,
    clean_addr,
    short,
)
from channels.email.headers import header_text

WARNING_RE = re.compile(
    r"warning (?:message )?only|will (?:continue to |keep )?(?:be )?retr(?:y|ied)|will keep trying"
    r"|has been delayed|delivery (?:is |has been )?delayed|not yet been delivered"
    r"|(?:hasn't|has not) been delivered yet|delivery incomplete|temporary problem delivering"
    r"|still undelivered|delivery will continue to be attempted|delivery attempts will continue"
    r"|transient non-fatal errors?|has been postponed|advisory[- ]only",
    re.I,
)
WARNING_SUBJECT_RE = re.compile(
    r"\(delay\)|^delayed mail|^warning: message .* delayed|^delivery delayed|"
    r"^delayed:|delivery status notification \(delay\)",
    re.I,
)
# Where the notification ends and the quoted original begins, across the formats below.
ORIGINAL_MARKER_RE = re.compile(
    r"^[ \t]*(?:-+ ?Below this line is a copy of the message|-+ ?This is a copy of the message"
    r"|-+ ?The header of the original message is following|-+ ?Original message ?-+"
    r"|-+ ?Original Message Headers? ?-+|Original message headers:|-+ ?Returned mail ?-+"
    r"|-+ ?Original message follows|Content-Type: message/rfc822|-+ ?START OF RETURNED MESSAGE"
    r"|The first \d+ lines of your original message follow|Original message details:)",
    re.I | re.M,
)


def notice_part(text: str) -> str:
    match = ORIGINAL_MARKER_RE.search(text)
    return text[: match.start()] if match else text


def diagnostic_from(text: str) -> str:
    """The most informative SMTP reply in a free-text notice, shortened."""
    patterns = (
        r"#(\d{3}[ -]\d\.\d{1,3}\.\d{1,3}[^#\n]*)",  # Exchange "#550 5.1.1 RESOLVER...##"
        r"Remote Server returned '([^']+)'",
        r"^\s*(?:Reason|Error|Diagnostic(?:-Code)?|Status code)\s*:\s*(?:smtp;\s*)?"
        r"([245]\d\d\b.*)$",
        r"(?:said|Remote host said|remote server said|SMTP error from remote mail server"
        r" after [^:]+:)\s*:?\s*([245]\d\d\b.*(?:\n[ \t]+\S.*)*)",
        r"^\s*([245]\d\d[ -]\d\.\d{1,3}\.\d{1,3}\b.*)$",
        r"^\s*([245]\d\d[ -].+)$",
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.I | re.M)
        if match:
            diagnostic = re.sub(r"\(in reply to [^)]*\)", "", match.group(1))
            return short(diagnostic).rstrip("#").strip()
    return ""


def permanence(notice: str, subject: str, diagnostic: str) -> bool:
    if WARNING_SUBJECT_RE.search(subject) or WARNING_RE.search(notice):
        return False
    if CHALLENGE_RE.search(notice):
        return False
    status = STATUS_RE.search(diagnostic)
    code = status.group(1) if status else None
    if code is None:
        smtp = SMTP_CODE_RE.search(diagnostic)
        code = smtp.group(1) if smtp else None
    return code != "4"


FreeText = tuple[list[str], str]  # (recipients, diagnostic)


def parse_postfix(notice: str) -> FreeText | None:
    if not re.search(
        r"This is the (?:mail system|Postfix program) at host|The Postfix program", notice, re.I
    ):
        return None
    recipients: list[str] = []
    diagnostics: list[str] = []
    # "<addr>: host mx[1.2.3.4] said: 550 ..." with indented continuation lines; aliases show
    # up as "<addr> (expanded from <alias>): ...", where alias is what we sent to.
    for match in re.finditer(
        r"^<([^>\s]+)>(?: \(expanded from <([^>\s]+)>\))?:\s*(.*(?:\n[ \t]+\S.*)*)",
        notice,
        re.M,
    ):
        addr = clean_addr(match.group(2) or match.group(1))
        if addr:
            recipients.append(addr)
            diagnostics.append(match.group(3))
    if not recipients:
        return None
    first = diagnostics[0]
    return recipients, diagnostic_from(first) or short(first)


def parse_exim(notice: str) -> FreeText | None:
    if not re.search(r"created automatically by mail delivery software", notice, re.I):
        return None
    intro = re.search(
        r"(?:could not be delivered to one or more of its\s+recipients|has not yet been delivered"
        r" to one or more of its\s+recipients)[^\n]*(?:\n(?!\s*\n).*)*\n\s*\n",
        notice,
        re.I,
    )
    if not intro:
        return None
    recipients: list[str] = []
    detail: list[str] = []
    for line in notice[intro.end() :].split("\n"):
        if not line.strip():
            if recipients:
                # Exim separates address blocks by blank lines; a non-indented line ends them.
                continue
            continue
        if not line.startswith((" ", "\t")):
            if recipients:
                break
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent <= 3 and re.fullmatch(r"<?[^\s<>@]+@[^\s<>]+>?", stripped):
            addr = clean_addr(stripped)
            if addr:
                recipients.append(addr)
        elif recipients:
            detail.append(stripped)
    if not recipients:
        return None
    text = "\n".join(detail)
    return recipients, diagnostic_from(text) or short(text)


_SENDMAIL_BLOCK_RE = re.compile(
    r"^[ \t]*-+[ \t]*The following addresses? ha(?:d|s|ve) (?:permanent fatal|transient"
    r" non-fatal) errors?[ \t]*-+[ \t]*\n((?:(?![ \t]*-{3,}).*\n?)*)",
    re.I | re.M,
)


def parse_sendmail(notice: str) -> FreeText | None:
    """Sendmail's "----- The following addresses had permanent fatal errors -----" block (and
    the "transient non-fatal errors" of its warnings): every address it lists, with the one an
    alias was "(expanded from: ...)", up to the transcript's own "-----" heading."""
    recipients: list[str] = []
    for block in _SENDMAIL_BLOCK_RE.finditer(notice):
        for line in block.group(1).split("\n"):
            if re.match(r"^\s*(?:<?[^\s<>@]+@[^\s<>]+>?|\(expanded from:?\s*[^)]*\))\s*$", line):
                recipients.extend(
                    a for a in map(clean_addr, re.findall(r"\S+@[^\s)>]+", line)) if a
                )
    if not recipients:
        return None
    transcript = notice[notice.find("Transcript of session") :] if "Transcript" in notice else ""
    return recipients, diagnostic_from(transcript or notice)


def parse_colon_blocks(notice: str) -> FreeText | None:
    """qmail-style "<addr>:" lines followed by the remote server's reply (qmail, Yahoo)."""
    recipients: list[str] = []
    diagnostic = ""
    for match in re.finditer(r"^<([^>\s]+)>:[ \t]*\n((?:[^\n]+\n)*[^\n]*)", notice, re.M):
        addr = clean_addr(match.group(1))
        if addr:
            recipients.append(addr)
            if not diagnostic:
                diagnostic = diagnostic_from(match.group(2)) or short(match.group(2))
    return (recipients, diagnostic) if recipients else None


def parse_qmail(notice: str) -> FreeText | None:
    if not re.search(r"This is the qmail-send program|qmail-send", notice, re.I):
        return None
    return parse_colon_blocks(notice)


def parse_yahoo(notice: str) -> FreeText | None:
    if not re.search(
        r"(?:Sorry, we were|We have been) unable to deliver your message to the following"
        r"|Message from\s+yahoo\.com",
        notice,
        re.I,
    ):
        return None
    return parse_colon_blocks(notice)


def parse_gmail(notice: str) -> FreeText | None:
    recipients: list[str] = []
    old = re.finditer(
        r"Delivery to the following recipients? (?:failed permanently|has been delayed"
        r"|failed temporarily):\s*\n((?:[ \t]*[^\s@]+@\S+[ \t]*\n)+)",
        notice,
        re.I,
    )
    for match in old:
        recipients.extend(a for a in map(clean_addr, match.group(1).split()) if a)
    if not recipients:
        new = re.finditer(
            r"(?:Your message wasn't delivered to|There was a (?:temporary )?problem delivering"
            r" your message to|Your message to|couldn't be delivered to)"
            r"\s+<?([^\s<>@]+@[^\s<>]+?)>?[\s.,]",
            notice,
            re.I,
        )
        if not re.search(
            r"\*\* ?(?:Address not found|Message not delivered|Message blocked|Delivery"
            r" incomplete|Message not delivered yet) ?\*\*|mail\.google|support\.google\.com",
            notice,
            re.I,
        ):
            return None
        recipients.extend(a for a in (clean_addr(m.group(1)) for m in new) if a)
    if not recipients:
        return None
    remote = re.search(
        r"(?:response from the remote server was|Technical details of"
        r" [^:]*):\s*\n?(.*(?:\n(?!\s*\n).*)*)",
        notice,
        re.I,
    )
    diagnostic = remote.group(1) if remote else ""
    return recipients, diagnostic_from(diagnostic) or short(diagnostic)


def parse_exchange(notice: str) -> FreeText | None:
    intro = re.search(
        r"Delivery has failed to these recipients or (?:groups|distribution lists):"
        r"|Delivery is delayed to these recipients or (?:groups|distribution lists):"
        r"|The following recipient\(s\) (?:could not be reached|cannot be reached):"
        r"|Your message to \S+ couldn't be delivered"
        r"|Your message did not reach some or all of the intended recipients"
        r"|did not reach the following recipient\(s\):",
        notice,
        re.I,
    )
    if not intro:
        return None
    body = notice[intro.start() :]
    admin = re.search(r"Diagnostic information for administrators:", body, re.I)
    user_part = body[: admin.start()] if admin else body
    recipients: list[str] = []
    couldnt = re.search(r"Your message to (\S+) couldn't be delivered", user_part, re.I)
    if couldnt:
        addr = clean_addr(couldnt.group(1))
        if addr:
            recipients.append(addr)
    colon = re.search(r":[ \t]*\n", user_part[:4000])
    if colon:
        # Recipients are listed as "addr", "addr (addr)" or "Display Name (addr)" lines,
        # or old-style "addr on <date>"; free text explanation follows each.
        for line in user_part[colon.end() : 4000].split("\n"):
            # Exchange 5.5 writes "addr on Fri, 4 Oct 2002", or its X.400 form
            # "c=US;a= ;p=Org;o=Site;dda:SMTP=addr; on ...".
            match = re.match(
                r"^\s*(?:\S[^(\n]*\(([^()\s@]+@[^()\s]+)\)|<?([^\s<>()@;]+@[^\s<>();]+?)>?"
                r"|\S*?\bdda:SMTP=([^\s;@]+@[^\s;]+);?)\s*(?:on \S.*)?$",
                line,
                re.I,
            )
            if match:
                addr = clean_addr(match.group(1) or match.group(2) or match.group(3))
                if addr:
                    recipients.append(addr)
    if admin and not recipients:
        for match in re.finditer(
            r"^\s*([^\s@]+@\S+)\s*\n\s*(?:Remote Server returned|#\d{3})", body[admin.end() :], re.M
        ):
            addr = clean_addr(match.group(1))
            if addr:
                recipients.append(addr)
    if not recipients and not re.match(r"did not reach the following", body, re.I):
        return None
    # Exchange 5.5 may list recipients by display name only ("Ann Lee on <date>"): still a
    # bounce, which a return path ties to its recipient even without an address.
    return recipients, diagnostic_from(body)


# What a notice says when it failed, in the words of the many MTAs without a layout of ours.
_FAILURE_RE = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|undelivered mail"
    r"|delivery (?:to the following recipients? )?(?:has )?failed|permanent(?: fatal)? errors?"
    r"|failed recipient|user unknown|no such user|mailbox (?:unavailable|full|not found)"
    r"|unable to deliver|not be delivered|delivery status notification|still undelivered"
    r"|(?:not|n't) (?:been )?(?:able to )?deliver|(?:was|were|been) (?:not|NOT) delivered"
    r"|delivery (?:failure|problems?|error)|fatal (?:delivery )?errors?|failed addresses"
    r"|did not reach|(?:unknown|invalid|illegal) (?:user|recipient|mailbox|address|host)"
    r"|(?:is|was) (?:automatically )?rejected|not (?:known|listed|found)|over ?quota"
    r"|quota (?:exceeded|violation)|does not exist|no longer (?:valid|exists?)|error[- ]for"
    r"|returned mail|processing error|has been delayed|delivery delayed|not yet been delivered"
    r"|no (?:valid|such) (?:recipients?|mailbox|address)|final (?:email )?delivery"
    r"|not a valid (?:user|recipient|address|mailbox)|full mailbox|(?:has been|was) postponed",
    re.I,
)
# Lines that name other addresses than the failed ones: the returned message's own headers,
# in the notices that quote them without a marker.
_NOT_A_RECIPIENT_LINE_RE = re.compile(
    r"^\W*(?:From|Sender|Reply-To|Return-Path|Message-ID|In-Reply-To|References|Received|"
    r"Errors-To)\s*:.*$|(?:please )?contact\s.*$|(?:mailto:|https?://)\S*",
    re.I | re.M,
)


def parse_generic(notice: str, msg: Message, *, any_address: bool = False) -> FreeText | None:
    """Sendmail's address block, else addresses on the lines of a notice that says it failed.

    With `any_address` (the notice comes from a mail daemon, not merely from some program),
    a notice that says it failed but has no layout we know names as recipients every address
    in it that is not the bounce's own, a daemon's or a return path.
    """
    sendmail = parse_sendmail(notice)
    if sendmail is not None:
        return sendmail
    # qmail's "<addr>:" blocks are a layout of their own, copied by other MTAs (Sina, vpopmail
    # hosts) without qmail's banner and in any language.
    blocks = parse_colon_blocks(notice)
    if blocks is not None:
        return blocks
    if not _FAILURE_RE.search(notice):
        return None
    ours: set[str] = set()
    for name in ("To", "Cc", "From", "Sender", "Reply-To", "Return-Path"):
        ours.update(header_addresses(msg, name).addresses)

    def wanted(addr: str) -> bool:
        if addr in ours:
            return False
        local = addr.rpartition("@")[0]
        return not DAEMON_LOCAL_RE.search(local) and not RETURN_PATH_LOCAL_RE.search(local)

    patterns = [
        r"^\s*(?:Failed |Original |Final )?Recipient(?:s|\(s\))?:?\s*<?([^\s<>@]+@[^\s<>]+?)>?\s*$",
        r"<([^\s<>@]+@[^\s<>]+)>\.\.\.",  # Sendmail transcript "<addr>... User unknown"
        r"^\s*[<\"]([^\s<>\"@]+@[^\s<>\"]+)[>\"]\s*:?\s*$",
        r"^\s{0,8}([^\s<>:@]+@[^\s<>:]+)\s*$",
        r"^\s*<?([^\s<>@]+@[^\s<>]+?)>?\s*[:(]",
        # "The following message, addressed to 'ann@example.com', failed because ..."
        r"(?:addressed to|address(?:es)?|delivered to|recipients?)\s*:?\s*[\"'<]"
        r"([^\s\"'<>@]+@[^\s\"'<>]+)[\"'>]",
    ]
    if any_address:
        patterns.append(ADDR_RE.pattern)
    text = _NOT_A_RECIPIENT_LINE_RE.sub("", notice)
    for pattern in patterns:
        found = re.finditer(pattern, text, re.I | re.M)
        addrs = (clean_addr(m.group(m.lastindex or 0)) for m in found)
        candidates = [a for a in addrs if a is not None and wanted(a)]
        if candidates:
            return candidates, diagnostic_from(notice)
    return None


def fingerprint(msg: Message, text: str) -> str | None:
    """The MTA/provider a DSN comes from, when it shows; None for an anonymous RFC 3464."""
    sender = (header_text(msg, "From") + " " + header_text(msg, "Return-Path")).lower()
    blob = text[:20_000]
    if (
        # Not the X-MS-Exchange-Organization-* headers: any mail fetched from an Exchange
        # mailbox carries those, bounces from other MTAs included.
        msg.get("X-MS-Exchange-Message-Is-Ndr") is not None
        or re.search(
            r"Delivery (?:has failed|is delayed) to these recipients|Diagnostic"
            r" information for administrators|Your message to \S+ couldn't be delivered",
            blob,
            re.I,
        )
        or "microsoftexchange" in sender
    ):
        return "exchange"
    if (
        "googlemail.com" in sender
        or "gmail.com" in sender
        or re.search(
            r"\*\* (?:Address not found|Message not delivered|Delivery incomplete|Message blocked)"
            r" \*\*|Delivery to the following recipient",
            blob,
        )
    ):
        return "gmail"
    if "yahoo" in sender or re.search(r"unable to deliver your message to the following", blob):
        return "yahoo"
    if re.search(r"This is the (?:mail system|Postfix program) at host", blob, re.I):
        return "postfix"
    if re.search(r"created automatically by mail delivery software", blob, re.I):
        return "exim"
    if re.search(r"qmail-send program", blob, re.I):
        return "qmail"
    return None
