"""Email adapters: receive, parse, strip, filter, thread and send mail."""
