"""The DNS records an app publishes for one email channel: MX (mail to its addresses reaches
the gateway), SPF (the relay may send as them) and DKIM (the public key of its signatures).

Each record comes with a hint in plain words; where the gateway cannot know the value (the
public key of a relay that signs for you), the record shows what to replace.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.email.dkim_record import DkimKeyError, dkim_record
from gateway.config import GatewayConfig
from tickets.models import Channel


@dataclass(frozen=True)
class DnsRecord:
    kind: str  # MX, SPF, DKIM
    name: str
    type: str
    value: str
    hint: str
    problem: str | None = None

    @property
    def zone_line(self) -> str:
        value = f'"{self.value}"' if self.type == "TXT" else self.value
        return f"{self.name}  IN {self.type} {value}"


def _relay_host(config: GatewayConfig, channel: Channel) -> str:
    smtp = channel.settings.get("smtp")
    if smtp:
        return str(smtp["host"])
    if config.outbound.transport == "smtp":
        return config.outbound.host
    return config.smtp.hostname


def channel_records(config: GatewayConfig, channel: Channel) -> list[DnsRecord]:
    domains = sorted({a.address.rpartition("@")[2] for a in channel.addresses})
    receiving_by_imap = bool(channel.settings.get("imap"))
    mx_hint = (
        "Not needed while mail reaches the gateway by IMAP or forwarding; publish it when the "
        "gateway should be the domain's mail server."
        if receiving_by_imap
        else f"Mail for the domain goes to the gateway's SMTP server ({config.smtp.hostname}, "
        f"listening on {config.smtp.listen})."
    )
    relay = _relay_host(config, channel)
    records: list[DnsRecord] = []
    for domain in domains:
        records.append(DnsRecord("MX", f"{domain}.", "MX", f"10 {config.smtp.hostname}.", mx_hint))
        records.append(
            DnsRecord(
                "SPF",
                f"{domain}.",
                "TXT",
                f"v=spf1 a:{relay} ~all",
                f"Lets {relay} send as @{domain}. A domain has one SPF record: add the a:{relay} "
                "part to the one you have; if your provider gives an include: value, use theirs.",
            )
        )
        if not channel.settings.get("dkim"):
            records.append(_relay_dkim(domain))
    if channel.settings.get("dkim"):
        records.append(_own_dkim(channel.settings["dkim"]))
    return records


def _own_dkim(settings: dict[str, str]) -> DnsRecord:
    """The record of the key the gateway signs with (its domain may differ from the
    addresses': a signature by the sending service's domain)."""
    domain = settings["domain"]
    try:
        record = dkim_record(settings["selector"], settings["domain"], settings["private_key_file"])
    except DkimKeyError as exc:
        return DnsRecord(
            "DKIM",
            f"{settings['selector']}._domainkey.{domain}.",
            "TXT",
            "",
            "The gateway signs this channel's mail with the key in the config file.",
            problem=f"the channel is set to sign its mail, but its key cannot be used: {exc}",
        )
    return DnsRecord(
        "DKIM",
        record.name,
        "TXT",
        record.value,
        "The gateway signs this channel's mail itself: publish exactly this.",
    )


def _relay_dkim(domain: str) -> DnsRecord:
    return DnsRecord(
        "DKIM",
        f"SELECTOR._domainkey.{domain}.",
        "TXT",
        "v=DKIM1; k=rsa; p=PUBLIC-KEY-FROM-YOUR-RELAY",
        "Your relay provider gives the selector and public key: replace both and turn signing "
        "on at the relay. For the gateway to sign, the operator gives the channel a [dkim] "
        "section in the config file.",
    )
