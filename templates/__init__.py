"""Jinja2 templates for outbound mail, installed with the package: email/<locale>/<name>/."""
