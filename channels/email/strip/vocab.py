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
# reliable part. Patterns run on one line, or on a few lines joined by a space
# because Gmail and Outlook wrap long attributions. Lines come here without the
# dashes some clients frame them with ("---- On ... wrote ----").
_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^On\s.{3,300}\s(?:wrote|sent)\s?:$",  # English
            r"^Am\s.{3,300}\sschrieb(?:\s.{1,300})?:$",  # German
            r"^Le\s.{3,300}\sa\sécrit\s?:$",  # French
            r"^El\s.{3,300}\sescribió\s?:$",  # Spanish
            r"^(?:Em|No dia)\s.{3,300}\sescreveu\s?:$",  # Portuguese
            r"^(?:Il|In data)\s.{3,300}\sha\sscritto\s?:$",  # Italian
            r"^Op\s.{3,300}\s(?:schreef(?:\s.{1,300})?|geschreven)\s?:$",  # Dutch
        )
    ),
    re.IGNORECASE,
)

# English clients that drop the colon ("On <date> <name> <addr> wrote", Android's
# "---- <name> wrote ----"): counted only with a date and an address or a time.
_COLONLESS_ATTRIBUTION_RE = re.compile(r"^.{3,300}\swrote$", re.IGNORECASE)

# These languages have no fixed first word (Gmail starts with the weekday), so
# they also need a time or an address before they count.
_UNANCHORED_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^.{3,300}\snapisał(?:\(a\)|a)?\s?:$",  # Polish
            r"^Wiadomość napisana przez\s.{3,300}:$",  # Polish, Apple Mail
            r"^.{3,300}\sskrev(?:\s.{1,300})?\s?:$",  # Swedish, Danish, Norwegian
            r"^.{3,300}\s(?:написал(?:\(а\)|а)?|пишет)\s?:$",  # Russian
            r"^.{3,300}\s(?:написав|написала|пише)\s?:$",  # Ukrainian
            r"^.{3,300}\sكتب\s?:$",  # Arabic
            r"^.{3,300}\skirjoitti\s?:$",  # Finnish
            r"^.{3,300}\skirjutas\s?:$",  # Estonian
            r"^.{3,300}\s(?:ezt\s)?írta(?:\s\(időpont:\s.{3,100}\))?\s?:$",  # Hungarian
            r"^.{3,300}\snaps(?:al|ala|al\(a\))\s?:$",  # Czech
            r"^.{3,300}\snapísal(?:a|\(a\))?\s?:$",  # Slovak
            r"^.{3,300}\sje\snapisa(?:o|la|l|la\s?\(a\))\s?:$",  # Croatian, Serbian, Slovenian
            r"^.{3,300}\sa\sscris\s?:$",  # Romanian
            r"^.{3,300}\syazdı\s?:$",  # Turkish
            r"^.{3,300}\sέγραψε\s?:$",  # Greek
            r"^.{3,300}\sđã\sviết\s?:$",  # Vietnamese
            r"^.{3,300}\s(?:rašė|rakstīja)\s?:$",  # Lithuanian, Latvian
            r"^.{3,300}\s(?:va\sescriure|escribió|escreveu|ha\sscritto|a\sécrit)\s?:$",
            r"^.{3,300}\s(?:schrieb|schreef)(?:\s.{1,300})?\s?:$",  # without Am/Op
            r"^.{3,300}<[^<>\s]{1,200}@[^<>\s]{1,200}>\swrote\s?:$",  # "<name> <addr> wrote:"
            r"^.{3,300}(?:写道|寫道|のメッセージ|のメール|書きました|작성)\s?[:：]$",  # zh, ja, ko
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
    "from": "from|von|de|van|från|fra|od|от|da|lähettäjä|feladó|kimden|nadawca|від|šalje|"
    "mittente|remitente|expéditeur|afzender|absender|frá|saatja|αποστολέας|"
    "发件人|寄件者|差出人|보낸 사람|από|de la|من|מאת|відправник|подател",
    "date": "sent|date|gesendet|datum|envoyé|enviado|enviada|enviado el|fecha|data|inviato|"
    "verzonden|skickat|sendt|dato|wysłano|wysłane|отправлено|дата|date d'envoi|"
    "message du|inviato il|enviat|enviada em|enviado em|data de envio|lähetetty|"
    "päivämäärä|saadetud|odesláno|odoslané|"
    "poslano|elküldve|dátum|trimis|gönderildi|tarih|στάλθηκε|надіслано|відправлено|"
    "日期|发送时间|寄件日期|送信日時|日付|날짜|보낸 날짜|envoye|تاريخ الإرسال|התאריך|נשלח|"
    "изпратено|poslato|послато",
    "to": "to|an|à|para|a|aan|till|til|do|кому|pour|per a|vastaanottaja|saaja|komu|za|"
    "prima|címzett|către|kime|adresat|προς|收件人|收件者|宛先|받는 사람|إلى|אל|до",
    "subject": "subject|betreff|objet|asunto|assunto|oggetto|onderwerp|ämne|emne|temat|тема|"
    "sujet|tema|efni|aihe|teema|předmět|predmet|zadeva|tárgy|subiect|konu|θέμα|"
    "主题|主旨|件名|제목|الموضوع|נושא",
    "cc": "cc|kopie|kopi|dw|копия|copie à|kopio|bilgi|抄送",
    "bcc": "bcc",
    "reply-to": "reply-to|antwort an|répondre à",
}
_HEADER_FIELDS = {
    name: field for field, names in _HEADER_NAMES.items() for name in names.split("|")
}
_FROM_KEYS = frozenset(k for k, v in _HEADER_FIELDS.items() if v == "from")
_OTHER_HEADER_KEYS = frozenset(k for k, v in _HEADER_FIELDS.items() if v != "from")
# Dates some clients write above the header block too ("Message du : <date>").
_DATE_HEADER_KEYS = frozenset(k for k, v in _HEADER_FIELDS.items() if v == "date")


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
        "reply message",
        "antwort nachricht",
        "original-nachricht",
        "originalnachricht",
        "message original",
        "oprindelig besked",
        "original meddelelse",
        "originele bericht",
        "alkuperäinen viesti",
        "algne kiri",
        "eredeti üzenet",
        "původní zpráva",
        "pôvodná správa",
        "izvorna poruka",
        "izvirno sporočilo",
        "mesaj original",
        "orijinal mesaj",
        "αρχικό μήνυμα",
        "оригинальное сообщение",
        "первоначальное сообщение",
        "вихідне повідомлення",
        "原始邮件",
        "原始郵件",
        "元のメッセージ",
        "원본 메시지",
        "missatge original",
    }
)

# --- forwards ---------------------------------------------------------------------------

# Gmail/Thunderbird style: the phrase framed by dashes.
_FORWARD_DASHED_PHRASES = frozenset(
    {
        "forwarded message",
        "forwarded message follows",
        "weitergeleitete e-mail",
        "message transmis",
        "mensaje reenviado",
        "doorgestuurd bericht",
        "välitetty viesti",
        "továbbított üzenet",
        "přeposlaná zpráva",
        "iletilen mesaj",
        "προωθημένο μήνυμα",
        "转发的邮件",
        "轉寄的郵件",
        "転送されたメッセージ",
        "전달된 메시지",
        "forwarded e-mail",
        "weitergeleitete nachricht",
        "message transféré",
        "mensagem encaminhada",
        "mensagem reencaminhada",
        "messaggio inoltrato",
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
        "start of forwarded message",
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
    r"skickat från|sendt fra|отправлено с|отправлено из|sent via|envoyé avec|"
    r"télécharger outlook|download outlook|scarica outlook|descargar outlook|"
    r"lähetetty|odesláno z|gönderen|küldve|verzonden vanuit|أُرسلت من|أرسلت من)\b",
    re.IGNORECASE,
)
# A device or app name must also appear, so "Sent from the warehouse today" survives.
_MOBILE_DEVICE_RE = re.compile(
    r"iphone|ipad|android|samsung|galaxy|pixel|huawei|xiaomi|blackberry|mobile|"
    r"smartphone|handy|tablet|outlook|yahoo|mail|telefon|teléfono|móvil|celular|"
    r"cellulare|телефон|ios\b|aol|proton|gmx|web\.de|"
    # An app's name with its link glued on, ending the line ("Sent from TypeApp<http://...>").
    r"\w\s?[<(]https?://[^\s<>()]+[>)]$",
    re.IGNORECASE,
)
# "Sent from my <device>" with a device we do not know: a signature only as the last line.
_MOBILE_GENERIC_RE = re.compile(r"^sent from my(?:\s[\w-]+){1,4}$", re.IGNORECASE)
_MAX_MOBILE_LINE = 120
# A "-- " block longer than this is more likely content than a signature.
_MAX_SIGNATURE_LINES = 15
