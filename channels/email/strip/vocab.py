"""Words and patterns the mail clients write around quoted history, per language.

Data only: the attribution lines ("On <date>, <name> wrote:"), the field names of Outlook-style
header blocks, the "Original Message" and forward markers, and the mobile "Sent from" lines. The
logic that uses them lives in `markers` (where history starts) and `text` (signatures).
"""

from __future__ import annotations

import re

_MAX_MARKER_LINE = 400

# --- reply attribution lines ("On <date>, <name> wrote:") -------------------------------

# Each client/language writes the attribution differently; the verb is the
# reliable part. Patterns run on one line, or on two lines joined by a space
# because Gmail and Outlook wrap long attributions.
_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^On\s.{3,300}\swrote\s?:$",  # English
            r"^Am\s.{3,300}\sschrieb(?:\s.{1,300})?:$",  # German
            r"^Le\s.{3,300}\sa\sécrit\s?:$",  # French
            r"^El\s.{3,300}\sescribió\s?:$",  # Spanish
            r"^(?:Em|No dia)\s.{3,300}\sescreveu\s?:$",  # Portuguese
            r"^Il\s.{3,300}\sha\sscritto\s?:$",  # Italian
            r"^Op\s.{3,300}\s(?:schreef(?:\s.{1,300})?|geschreven)\s?:$",  # Dutch
        )
    ),
    re.IGNORECASE,
)

# These languages have no fixed first word (Gmail starts with the weekday), so
# they also need a time or an address before they count.
_UNANCHORED_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^.{3,300}\snapisał(?:\(a\)|a)?\s?:$",  # Polish
            r"^Wiadomość napisana przez\s.{3,300}:$",  # Polish, Apple Mail
            r"^.{3,300}\sskrev(?:\s.{1,300})?\s?:$",  # Swedish, Danish, Norwegian
            r"^.{3,300}\s(?:написал(?:\(а\)|а)?|пишет)\s?:$",  # Russian
        )
    ),
    re.IGNORECASE,
)

_TIME_RE = re.compile(r"\d{1,2}[:.]\d{2}")
_DIGIT_RE = re.compile(r"\d")
_YEAR_RE = re.compile(r"\d{4}")

# --- Outlook header blocks ----------------------------------------------------------------

# What each field name of a quoted header block means, in the languages above; the names
# Outlook, Gmail, Apple Mail and Thunderbird write in front of From, Sent/Date, To, Subject.
_HEADER_NAMES = {
    "from": "from|von|de|van|från|fra|od|от|da|lähettäjä|feladó",
    "date": "sent|date|gesendet|datum|envoyé|enviado|enviada|enviado el|fecha|data|inviato|"
    "verzonden|skickat|sendt|dato|wysłano|wysłane|отправлено|дата",
    "to": "to|an|à|para|a|aan|till|til|do|кому|pour",
    "subject": "subject|betreff|objet|asunto|assunto|oggetto|onderwerp|ämne|emne|temat|тема|sujet",
    "cc": "cc|kopie|kopi|dw|копия",
    "bcc": "bcc",
    "reply-to": "reply-to|antwort an|répondre à",
}
_HEADER_FIELDS = {
    name: field for field, names in _HEADER_NAMES.items() for name in names.split("|")
}
_FROM_KEYS = frozenset(k for k, v in _HEADER_FIELDS.items() if v == "from")
_OTHER_HEADER_KEYS = frozenset(k for k, v in _HEADER_FIELDS.items() if v != "from")

_ORIGINAL_MESSAGE_PHRASES = frozenset(
    {
        "original message",
        "ursprüngliche nachricht",
        "message d'origine",
        "message d’origine",
        "mensaje original",
        "mensagem original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "origineel bericht",
        "originalmeddelande",
        "ursprungligt meddelande",
        "oprindelig meddelelse",
        "opprinnelig melding",
        "wiadomość oryginalna",
        "исходное сообщение",
    }
)

# --- forwards ---------------------------------------------------------------------------

# Gmail/Thunderbird style: the phrase framed by dashes.
_FORWARD_DASHED_PHRASES = frozenset(
    {
        "forwarded message",
        "forwarded e-mail",
        "weitergeleitete nachricht",
        "message transféré",
        "mensaje reenviado",
        "mensagem encaminhada",
        "mensagem reencaminhada",
        "messaggio inoltrato",
        "doorgestuurd bericht",
        "wiadomość przekazana dalej",
        "przekazana wiadomość",
        "vidarebefordrat meddelande",
        "videresendt meddelelse",
        "videresendt melding",
        "пересылаемое сообщение",
        "переадресованное сообщение",
    }
)

# Apple Mail style: a sentence ending in a colon.
_FORWARD_INTRO_PHRASES = frozenset(
    {
        "begin forwarded message",
        "forwarded message",  # Sparrow
        "anfang der weitergeleiteten nachricht",
        "anfang der weitergeleiteten e-mail",
        "début du message réexpédié",
        "début du message transféré",
        "inicio del mensaje reenviado",
        "início da mensagem reencaminhada",
        "início da mensagem encaminhada",
        "inizio messaggio inoltrato",
        "begin doorgestuurd bericht",
        "początek przekazywanej wiadomości",
        "vidarebefordrat brev",
        "start på videresendt besked",
        "start på videresendt melding",
        "videresendt melding",
        "начало переадресованного сообщения",
        "начало пересылаемого сообщения",
    }
)

# --- signatures -------------------------------------------------------------------------

_MOBILE_PREFIX_RE = re.compile(
    r"^(?:sent from|sent with|get outlook for|von meinem|gesendet von|gesendet mit|"
    r"outlook für|envoyé de|envoyé depuis|obtenir outlook|enviado desde|enviado do|"
    r"enviado de|obtener outlook|inviato da|verzonden (?:vanaf|met|van)|wysłane z|"
    r"skickat från|sendt fra|отправлено с|отправлено из)\b",
    re.IGNORECASE,
)
# A device or app name must also appear, so "Sent from the warehouse today" survives.
_MOBILE_DEVICE_RE = re.compile(
    r"iphone|ipad|android|samsung|galaxy|pixel|huawei|xiaomi|blackberry|mobile|"
    r"smartphone|handy|tablet|outlook|yahoo|mail|telefon|teléfono|móvil|celular|"
    r"cellulare|телефон|ios\b|aol|proton|gmx|web\.de",
    re.IGNORECASE,
)
_MAX_MOBILE_LINE = 120
# A "-- " block longer than this is more likely content than a signature.
_MAX_SIGNATURE_LINES = 15
