"""Phrases that automatic replies use, per language: the data behind channels.email.autoreply.

Kept apart from the detection logic so a language can be added without reading code.  Each
entry is a regular-expression fragment, matched case-insensitively on NFC text with runs of
whitespace collapsed to one space.  Accents are optional where gateways and old clients are
known to strip them.

Where the phrases come from: Exchange/Outlook's localised "Automatic reply:" and the older
"Out of Office AutoReply:" prefixes, Lotus Notes' "AUTO:" subjects, the vacation responders of
Gmail, Yahoo, Zimbra, GroupWise, AOL and the webmail of European providers, and the first
sentences people type into their own responders ("I am out of the office until ...").
"""

from __future__ import annotations

# Phrases a client puts at the very start of an automatic reply's subject.  The phrase must
# end at a word boundary, so "Autoreplyer settings?" or "Auto insurance" do not match.
SUBJECT_PREFIXES: tuple[str, ...] = (
    # English
    r"away from (?:the |my )?(?:office|desk)",
    r"vacation (?:reply|response|message|notice)",
    r"holiday (?:reply|notice)",
    r"absence (?:notice|notification)",
    # Acknowledgements of the customer's own helpdesk or shop
    r"we(?: have|'ve)? received your (?:e-?mail|message|request|enquiry|inquiry)",
    r"your (?:e-?mail|message|request|enquiry|inquiry) (?:has been|was) received",
    # German
    r"abwesenheitsnotiz",
    r"abwesenheitsmeldung",
    r"automatische antwort",
    r"automatische r[üu]ckantwort",
    r"nicht im b[üu]ro",
    r"urlaubsabwesenheit",
    # French
    r"r[ée]ponse automatique",
    r"absence du bureau",
    r"absent(?:e)? du bureau",
    r"message d'absence",
    # Spanish, Catalan, Galician, Basque
    r"respuesta autom[áa]tica",
    r"fuera de (?:la )?oficina",
    r"resposta autom[àáa]tica",
    r"fora de l'oficina",
    r"erantzun automatikoa",
    # Italian
    r"risposta automatica",
    r"fuori sede",
    r"fuori ufficio",
    # Dutch
    r"automatisch antwoord",
    r"automatisch bericht",
    r"afwezigheidsbericht",
    r"niet op kantoor",
    # Portuguese
    r"resposta autom[áa]tica",
    r"fora do escrit[óo]rio",
    # Polish
    r"odpowied[źz] automatyczna",
    r"automatyczna odpowied[źz]",
    r"poza biurem",
    # Nordic
    r"autosvar",
    r"automatiskt svar",
    r"automatisk svar",
    r"automatisk besked",
    r"fr[åa]nvaromeddelande",
    r"frav[æa]rsmelding",
    r"frav[æa]rsbesked",
    r"automaattinen vastaus",
    r"poissa toimistolta",
    r"sj[áa]lfvirkt svar",
    # Baltic
    r"autom[āa]tisk[āa] atbilde",
    r"[āa]rpus biroja",
    r"automatinis atsakymas",
    r"automaatvastus",
    # Central and south-east Europe
    r"automatick[áa] odpov[ěe][ďd]",
    r"mimo kancel[áa][řr]",
    r"automatikus v[áa]lasz",
    r"r[ăa]spuns automat",
    r"[îi]n afara biroului",
    r"automatski odgovor",
    r"izvan ureda",
    r"samodejni odgovor",
    r"otomatik (?:yan[ıi]t|cevap)",
    r"ofis d[ıi][şs][ıi]nda",
    r"αυτόματη απάντηση",
    r"εκτός γραφείου",
    # Cyrillic
    r"автоматический ответ",
    r"автоответ",
    r"нет на месте",
    r"вне офиса",
    r"автоматична відповідь",
    r"поза офісом",
    r"автоматичен отговор",
    r"извън офиса",
    r"аутоматски одговор",
    # Asia and the Middle East
    r"自動応答",
    r"自動返信",
    r"不在通知",
    r"不在のお知らせ",
    r"自动回复",
    r"自動回覆",
    r"自动答复",
    r"不在办公室",
    r"자동 ?회신",
    r"자동 ?응답",
    r"رد تلقائي",
    r"الرد التلقائي",
    r"خارج المكتب",
    r"תשובה אוטומטית",
    r"מחוץ למשרד",
    r"پاسخ خودکار",
    r"ตอบกลับอัตโนมัติ",
    r"tr[ảa] l[ờo]i t[ựu] [đd][ộo]ng",
    r"balasan (?:otomatis|automatik)",
    r"स्वचालित उत्तर",
)

# English phrases that a customer's own subject may also start with ("Out of office hours
# delivery?", "Auto reply you sent is in English", "On vacation next week"): they count only
# followed by what a responder puts after them, a colon, a bracket, "Re:", "from", "until".
SUBJECT_PREFIX_TAGGED: tuple[str, ...] = (
    r"out of (?:the )?office(?: auto ?reply)?",
    r"out-of-office",
    r"automatic (?:reply|response|answer)",
    r"auto[- ]?(?:reply|response|respond|answer)",
    r"automated (?:reply|response)",
    r"on (?:annual )?(?:vacation|holidays?|leave)",
    r"(?:i am|i'm) (?:currently )?(?:out of (?:the )?office|away|on leave|on vacation|on holiday)",
)
SUBJECT_TAG_END = r"(?=\s*(?:[:\-–—(\[\]]|re\b|aw\b|sv\b|from\b|until\b|till\b|returning\b|$))"

# Single words that some responders use as the whole prefix ("Abwesend: Re: ..."), but that a
# customer may also start a subject with ("Absence de livraison"): they count only followed by
# a colon, the way clients write a prefix.
SUBJECT_PREFIX_WORDS: tuple[str, ...] = (
    r"ooo",
    r"oof",
    r"abwesend",
    r"abwesenheit",
    r"au(?:ss|ß)er haus",
    r"urlaub",
    r"absent(?:e)?",
    r"absence",
    r"ausente",
    r"assente",
    r"afwezig",
    r"aus[êe]ncia",
    r"nieobecno[śs][ćc]",
    r"fr[åa]nvaro",
    r"fr[åa]nvarande",
    r"frav[æa]rende",
    r"frav[æa]r",
    r"ikke til stede",
    r"poissa",
    r"lomalla",
    r"atvaļinājums|atvalinajums",
    r"ne biure",
    r"h[áa]zon k[íi]v[üu]l",
    r"odsoten",
    r"в отпуске",
    r"не в офисе",
    r"不在",
    r"休假",
    r"부재중?",
)

# Markers that may stand anywhere in the subject: Notes' "John is out of the office",
# AOL's "Re: topic (Automatic Response)", webmail's "[Autoreply]" or "[Automatyczna odpowiedź]".
SUBJECT_ANYWHERE: tuple[str, ...] = (
    # "Jamie Rivera is out of the office", "Hans ist außer Haus": a place, not a missing item
    # ("Item is absent from my order" is a customer's subject).
    r"\b(?:is|est|ist|è|está|esta|is niet) (?:currently |actuellement |derzeit )?"
    r"(?:out of (?:the )?office|absent(?:e)? du bureau|abwesend|au(?:ss|ß)er haus|"
    r"fuori (?:sede|ufficio)|fuera de la oficina|nicht im b[üu]ro|niet op kantoor)\b",
    # Notes: "Jean Dupont est absent(e) (retour le 12/06)", "Mario è assente (rientro ...)".
    r"\b(?:is|est|ist|è|está|esta|is) (?:absent(?:e)?(?:\(e\))?|assente|ausente|afwezig) "
    r"\((?:retour|returning|back|r[üu]ckkehr|zur[üu]ck|rientro|regreso|terug)",
    r"[\[(](?:auto[- ]?(?:reply|response)|automatic (?:reply|response)|out of (?:the )?office|"
    r"automatyczna odpowied[źz]|odpowied[źz] automatyczna|r[ée]ponse automatique|"
    r"automatische antwort|respuesta autom[áa]tica|risposta automatica|autosvar|"
    r"automatisch antwoord|vacation (?:reply|response|notice|message)|abwesenheitsnotiz)"
    r"[^\])]*[\])]",
)

# Sentences that state outright that the message was written by a machine.  One is enough
# anywhere in the first lines of the body.
BODY_AUTOMATIC: tuple[str, ...] = (
    r"this is an? (?:automatic(?:ally generated)?|automated|auto[- ]?generated|auto[- ]?)"
    r" ?(?:reply|response|message|e-?mail|notification|answer)",
    r"this (?:message|e-?mail|reply|response) (?:is|was) (?:an? )?(?:automatic(?:ally)?|automated|"
    r"auto[- ]?generated|sent automatically|generated automatically)",
    r"(?:this is )?an? (?:automatic|automated) (?:out[- ]of[- ]office|vacation|holiday|absence)"
    r" (?:reply|response|message|notice)",
    r"dies ist eine automatische (?:antwort|nachricht|e-?mail|benachrichtigung|abwesenheitsnotiz)",
    r"diese (?:nachricht|e-?mail) wurde automatisch",
    r"(?:ceci|ce message|ce courriel|cet e-?mail) est une? (?:r[ée]ponse|message) automatique",
    r"(?:ceci|ce message) est (?:un message|une r[ée]ponse) g[ée]n[ée]r[ée]e? automatiquement",
    r"(?:[ée]ste|esto|este mensaje) es (?:un mensaje|una respuesta) autom[áa]tic[oa]",
    r"(?:questa|questo messaggio) [èe] una risposta automatica",
    r"(?:questo|questa) [èe] un messaggio automatico",
    r"dit is een automatisch (?:antwoord|bericht|gegenereerd)",
    r"(?:esta|este) [ée] uma? (?:resposta|mensagem) autom[áa]tica",
    r"to jest (?:automatyczna odpowied[źz]|wiadomo[śs][ćc] automatyczna|"
    r"automatyczna wiadomo[śs][ćc])",
    r"(?:detta|dette) (?:er|[äa]r) (?:et|ett) automatisk(?:t)? (?:svar|meddelande|besked)",
    r"t[äa]m[äa] on automaattinen (?:vastaus|viesti)",
    r"(?:это|данное сообщение) (?:автоматический ответ|автоматическое сообщение)",
    r"toto je automatick[áa] odpov[ěe][ďd]",
    r"ez egy automatikus v[áa]lasz",
    r"acesta este un r[ăa]spuns automat",
    r"bu (?:bir )?otomatik (?:yan[ıi]t|cevap|mesaj)",
    r"αυτό είναι ένα αυτόματο μήνυμα",
    r"このメールは自動(?:返信|応答|送信)",
    r"(?:本邮件|此邮件|这是一封)(?:为|是)?自动回复",
    r"(?:本郵件|此郵件|這是一封)(?:為|是)?自動回覆",
    r"자동 ?(?:회신|응답) (?:메일|메시지)입니다",
    # Challenge-response filters ask the sender to prove being a person.
    r"this (?:account|mailbox|e-?mail address) is protected by",
    r"(?:added|add you) to (?:the recipient's|my|our) (?:allowed|approved|safe|white) ?"
    r"(?:list|senders)",
    r"(?:verify|confirm) (?:that )?you are (?:a )?(?:human|real person)",
)

# The absence itself, at the start of a sentence, and what is said about the return or about
# who handles mail meanwhile.  An opening with both is an out-of-office notice; either alone is
# something a customer might write ("I'm on vacation, can I change the address?").
BODY_ABSENT: tuple[str, ...] = (
    # English
    r"(?:i am|i'm|i will be|i'll be|i shall be) (?:currently |now |presently |"
    r"unfortunately |temporarily )?(?:out of (?:the )?office|out of the country|away|"
    r"(?:on|taking) (?:annual |parental |maternity |paternity |sick |study )?(?:leave|vacation|"
    r"holidays?|pto)|off (?:work|sick)|unavailable|not (?:in the office|available|at my desk)|"
    r"at a conference)",
    r"(?:thank you|thanks) for (?:your|the) (?:e-?mail|message|mail|note)[^.!]{0,40}[.!,]"
    r" (?:i am|i'm|i will be|unfortunately i)",
    r"(?:our|the) office (?:is|will be) closed",
    r"(?:we|i) have received your (?:e-?mail|message|enquiry|inquiry|request)",
    r"wir haben ihre (?:e-?mail|nachricht|anfrage) erhalten",
    r"nous avons (?:bien )?re[çc]u votre (?:message|e-?mail|courriel|demande)",
    r"hemos recibido (?:su|tu) (?:mensaje|correo|e-?mail|solicitud|consulta)",
    r"abbiamo ricevuto (?:il suo|la sua|il tuo|la tua) (?:messaggio|e-?mail|richiesta)",
    r"wij hebben uw (?:e-?mail|bericht|aanvraag) (?:ontvangen|in goede orde ontvangen)",
    # German
    r"ich bin (?:vo(?:m|n)|bis|ab|derzeit|zurzeit|zur zeit|momentan|aktuell|leider|heute|"
    r"in der zeit|nicht im (?:b[üu]ro|haus)|abwesend|im urlaub|auf (?:dienst|gesch[äa]fts)reise|"
    r"au(?:ss|ß)er haus|nicht erreichbar)",
    r"ich befinde mich (?:vo(?:m|n)|bis|derzeit|zurzeit|zur zeit|momentan|im urlaub)",
    r"(?:vielen |herzlichen )?dank f[üu]r ihre (?:e-?mail|nachricht|mail)[^.!]{0,40}[.!,] ich bin",
    # French
    r"je (?:suis|serai) (?:actuellement |absente?|en (?:cong[ée]s?|vacances|d[ée]placement)|"
    r"hors du bureau|indisponible|absent)",
    r"(?:merci|je vous remercie) (?:pour|de) votre (?:message|courriel|e-?mail|mail)[^.!]{0,40}"
    r"[.!,] je (?:suis|serai)",
    # Spanish, Catalan
    r"(?:estoy|estar[ée]|me encuentro) (?:actualmente |de (?:vacaciones|viaje|baja|permiso)|"
    r"fuera|ausente|en (?:vacaciones|viaje|una conferencia))",
    r"(?:gracias|muchas gracias) por (?:su|tu) (?:correo|mensaje|e-?mail)[^.!]{0,40}[.!,]"
    r" (?:estoy|estar[ée]|me encuentro)",
    r"(?:s[óo]c|estic|estar[ée]) (?:fora|absent|de vacances)",
    # Italian
    r"(?:sono|sar[òo]) (?:attualmente |assente|fuori (?:sede|ufficio)|in (?:ferie|vacanza|"
    r"trasferta|congedo)|lontan)",
    # Dutch
    r"ik ben (?:tot|van|vanaf|afwezig|niet (?:aanwezig|op kantoor|bereikbaar)|met vakantie|"
    r"op vakantie|vrij|momenteel|op dit moment|vandaag|helaas)",
    # Portuguese
    r"(?:estou|estarei|encontro-me) (?:atualmente |actualmente |de f[ée]rias|fora|ausente|"
    r"em f[ée]rias|em licen[çc]a)",
    # Polish, Czech, Slovak, Hungarian, Romanian, Croatian/Serbian, Slovene
    r"(?:jestem|b[ęe]d[ęe]) (?:na urlopie|nieobecn[ya]|poza biurem|niedost[ęe]pn[ya])",
    r"(?:do dnia|od dnia) [^.]{0,30} (?:jestem|b[ęe]d[ęe]) ",
    r"(?:jsem|budu) (?:mimo kancel[áa][řr]|na dovolen[éa]|nep[řr][íi]tomn)",
    r"(?:som|budem) (?:mimo kancel[áa]rie|na dovolenke|nepr[íi]tomn)",
    r"(?:szabads[áa]gon vagyok|nem vagyok az irod[áa]ban|irod[áa]n k[íi]v[üu]l vagyok)",
    r"(?:sunt|voi fi) (?:[îi]n concediu|plecat|absent|[îi]n afara biroului)",
    r"(?:nalazim se|trenutno sam|bit [ćc]u) (?:na godi[šs]njem|na odmoru|izvan ureda|odsutan)",
    r"(?:sem|bom) (?:odsoten|odsotna|na dopustu)",
    # Nordic, Finnish
    r"jag (?:[äa]r|kommer att vara) (?:p[åa] semester|borta|ledig|tj[äa]nstledig|"
    r"inte p[åa] kontoret|fr[åa]nvarande|p[åa] resa|f[öo]r n[äa]rvarande)",
    r"jeg (?:er|vil v[æa]re) (?:p[åa] ferie|ikke p[åa] kontoret|frav[æa]rende|bortrejst|"
    r"ikke til stede|ude af huset|p[åa] (?:kursus|barsel)|for tiden|tilbake|utilgjengelig)",
    r"olen (?:lomalla|poissa|matkoilla|vapaalla|tavoittamattomissa)",
    # Latvian, Lithuanian, Estonian
    r"(?:es esmu|esmu) (?:atvaļinājumā|atvalinajuma|ārpus biroja|arpus biroja|prombūtnē)",
    r"esu (?:atostogose|i[šs]vyk[ęe]s|i[šs]vykusi)",
    r"olen (?:puhkusel|kontorist eemal)",
    # Greek, Turkish
    r"(?:είμαι|θα είμαι) (?:εκτός γραφείου|σε άδεια|σε διακοπές)",
    r"(?:ofis d[ıi][şs][ıi]nday[ıi]m|izindeyim|tatildeyim)",
    # Cyrillic
    r"я (?:нахожусь |буду |сейчас |в настоящее время )?(?:в отпуске|в командировке|вне офиса|"
    r"отсутствую|не в офисе|на больничном)",
    r"меня (?:нет|не будет) (?:в офисе|на месте|на работе)",
    r"(?:я у відпустці|я перебуваю у відпустці|мене немає в офісі)",
    r"(?:аз съм в отпуск|няма да бъда в офиса)",
)

# The same for scripts written without spaces between words, where a sentence start cannot be
# told: these phrases are specific enough to count anywhere in the opening.
BODY_ABSENT_ANYWHERE: tuple[str, ...] = (
    r"(?:不在|休暇|出張)(?:にしております|にしています|中です|中のため|のため)",
    r"(?:我|本人)(?:目前|现在|正在|將|将)?(?:不在办公室|休假|出差|在休假)",
    r"(?:我|本人)(?:目前|現在|正在|將)?(?:不在辦公室|休假|出差)",
    r"(?:휴가|출장|부재) ?중입니다",
    r"(?:أنا )?(?:خارج المكتب|في إجازة)",
    r"(?:אני )?(?:מחוץ למשרד|בחופשה)",
)

# What an out-of-office notice talks about besides the absence: the office, the mail it is
# answering, who to contact meanwhile. "I'm away until Friday, please deliver then" has none.
BODY_CONTEXT: tuple[str, ...] = (
    r"office|e-?mail|message|\bmail\b|contact|urgent|emergenc|colleague",
    r"b[üu]ro|nachricht|kontakt|dringend|kolleg|vertretung|weitergeleitet",
    r"bureau|courriel|contact|urgen|coll[èe]gue",
    r"oficina|correo|mensaje|contact|urgen|compa[ñn]er",
    r"ufficio|messaggi|contatt|urgen|collega|sede",
    r"kantoor|bericht|contact|dringend|collega",
    r"escrit[óo]rio|mensage|contat|urgen|colega",
    r"biur|wiadomo|kontakt|piln",
    r"kontor|meddelande|besked|melding|kontakt|br[åa]dskande|haster|akut",
    r"toimisto|viesti|s[äa]hk[öo]post|kiireelli",
    r"офис|сообщени|письм|срочн|коллег|обращ",
    r"メール|連絡|急ぎ|邮件|郵件|联系|聯繫|紧急|緊急|메일|연락|급한",
    r"[āa]rpus biroja|biroj|zi[ņn]|e-?pasts|kancel|iroda|birou|ured|pisarn|ofis|γραφε|μήνυμα",
    r"مكتب|رسال|משרד|הודע",
)

# Words of a holiday or a leave: an absence said with one of them needs no context above.
BODY_LEAVE: tuple[str, ...] = (
    r"vacation|holiday|annual leave|\bon leave|out of (?:the )?office",
    r"urlaub|nicht im b[üu]ro|abwesend|dienstreise|gesch[äa]ftsreise",
    r"vacances|cong[ée]|absente?\b|hors du bureau",
    r"vacaciones|ausente|fuera de la oficina|vacances",
    r"ferie|vacanza|assente|fuori (?:sede|ufficio)",
    r"vakantie|afwezig|verlof",
    r"f[ée]rias|licen[çc]a",
    r"urlop|nieobecn",
    r"semester|ferie|ledig|fr[åa]nvarande|frav[æa]rende",
    r"loma|poissa",
    r"отпуск|командировк|відпустц",
    r"休暇|不在|出張|休假|出差|휴가|출장|부재",
    r"dovolen|szabads[áa]g|concediu|godi[šs]nj|dopust|atvaļinājum|atostog|puhkus|izin|tatil|άδεια|διακοπές",
)

BODY_RETURN: tuple[str, ...] = (
    # English
    r"\buntil\b",
    r"\btill\b",
    r"\b(?:be |get )?back (?:on|in|at|from|by|to the office|next)\b",
    r"\breturn(?:ing)? (?:on|to the office|to work|in)\b",
    r"\bupon my return\b",
    r"\bon my return\b",
    r"\bwhen i (?:return|get back|am back)\b",
    r"\blimited (?:access|connectivity)\b",
    r"\bno access to (?:my )?e-?mail\b",
    r"\b(?:will|shall|i'll) (?:reply|respond|answer|get back to you|deal with|attend to|"
    r"be in touch|read)\b",
    r"\b(?:through|thru)\b",
    r"\bfrom \S+(?: \S+)? (?:to|-) \S+",
    r"\bnot (?:be )?(?:checking|monitoring|reading) (?:my )?e-?mail",
    r"\b(?:response|reply|replies|responses) (?:will|may) be delayed\b",
    r"\bas soon as (?:possible|i can|i am back|i return)\b",
    r"\bwithin (?:\d+|one|two|three|24|48) (?:hours|business days|working days|days)\b",
    r"\b(?:so schnell wie m[öo]glich|schnellstm[öo]glich|umgehend|innerhalb von)\b",
    r"\b(?:dans les (?:plus brefs|meilleurs) d[ée]lais|sous \d+ ?h)\b",
    r"\b(?:lo antes posible|a la mayor brevedad|en un plazo de)\b",
    r"\b(?:al pi[ùu] presto|entro \d+ ore)\b",
    r"\b(?:zo spoedig mogelijk|zo snel mogelijk|binnen \d+)\b",
    r"\bin my absence\b",
    r"\burgent(?:ly)?\b",
    r"\bemergenc(?:y|ies)\b",
    r"\bwill not be (?:read|forwarded)\b",
    r"\bplease contact\b",
    # German
    r"\bbis (?:zum|einschlie(?:ss|ß)lich|am|ende|\d)",
    r"\bzur[üu]ck\b",
    r"\bwieder (?:im b[üu]ro|erreichbar|da|verf[üu]gbar)\b",
    r"\bdringend",
    r"\bin dringenden\b",
    r"\bwenden sie sich\b",
    r"\bnachricht wird nicht weitergeleitet\b",
    # French
    r"\bjusqu'(?:au|à|a|le)\b",
    r"\bde retour\b",
    r"\bretour (?:le|pr[ée]vu)\b",
    r"\bà mon retour\b|\ba mon retour\b",
    r"\burgen(?:t|te|ce)s?\b",
    r"\bdu \d{1,2}\w*(?: \w+)? au \d",
    r"\bacc[èe]s (?:à|a) (?:mes|ma) (?:e-?mails?|messagerie|courriels?)",
    r"\bcontacter\b",
    # Spanish, Catalan, Portuguese, Italian
    r"\bhasta (?:el|la|\d)",
    r"\bfins al\b",
    r"\ba mi (?:regreso|vuelta|retorno)\b",
    r"\bregres(?:o|ar[ée])\b",
    r"\bvolver[ée]\b",
    r"\bat[ée] (?:o dia|ao dia|dia|\d)",
    r"\bregresso\b|\bretorno\b",
    r"\bfino al\b|\bfino a\b",
    r"\bal mio rientro\b|\brientrer[òo]\b|\brientro\b",
    r"\burgen\w*",
    r"\bdel \d{1,2}(?: de \w+)? al \d",
    r"\bdal \d{1,2}(?: \w+)? al \d",
    r"\bde \d{1,2}(?: de \w+)? a \d",
    # Dutch
    r"\btot en met\b|\bt/m\b",
    r"\bterug\b",
    r"\bweer aanwezig\b|\bweer op kantoor\b|\bvan \d{1,2}(?: \w+)? tot\b",
    r"\bdringende\b",
    # Polish, Czech, Slovak, Hungarian, Romanian, Croatian, Slovene
    r"\bdo dnia\b|\bdo \d|\bpo powrocie\b|\bpilnych\b",
    r"\bdo \d|\bpo n[áa]vratu\b|\bnal[ée]hav",
    r"\bpo n[áa]vrate\b",
    r"\b-ig\b|\bvisszat[ée]r",
    r"\bp[âa]n[ăa] (?:pe|la|[îi]n)\b|\bla [îi]ntoarcere\b",
    r"\bdo \d|\bpo povratku\b|\bhitn",
    r"\bpo vrnitvi\b|\bnujn",
    # Nordic, Finnish
    r"\btill och med\b|\bt\.o\.m\.?|\btillbaka\b|\b[åa]ter\b|\bbr[åa]dskande\b",
    r"\btil og med\b|\bt\.o\.m\.?|\btilbake\b|\btilbage\b|\btil den\b|\bhaster\b|\bakut",
    r"\basti\b|\bpalaan\b|\bpaluuni\b|\bkiireellisiss",
    # Baltic
    r"\blīdz\b|\blidz\b|\batgriez",
    r"\biki\b|\bgr[įi][žz]",
    r"\bkuni\b|\btagasi\b",
    # Greek, Turkish
    r"έως|μέχρι|επιστροφή",
    r"\btarihine kadar\b|\bkadar\b|\bd[öo]n[üu][şs]",
    # Cyrillic
    r"\bдо\b|\bвернусь\b|\bвозвращ|\bсрочн|\bповерн|\bтерміново|\bвръщане\b|\bспешн",
    # Asia and the Middle East
    r"まで|戻り|帰社|急ぎ",
    r"之前|返回|回来|回來|紧急|緊急",
    r"까지|복귀|급한",
    r"حتى|عودتي|العودة",
    r"עד|אחזור",
)
