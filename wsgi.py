"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from app.api import create_app

app = create_app()
