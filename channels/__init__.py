"""Adapters that plug into the domain: email (SMTP, IMAP, parsing, outbound) and chat."""
