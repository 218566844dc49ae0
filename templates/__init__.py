"""Jinja2 templates installed with the package: email/<locale>/<name>/ for outbound mail,
admin/ for the server-rendered admin pages."""
