"""Domain core of the gateway: conversations, messages, notes and the ticket layer.

Knows no SMTP, IMAP, HTTP or broker: services take a Session and a `now`, the caller owns the
transaction.
"""
