"""The throughput ceiling for bench/pay.py: a Flask hello-world under the same gunicorn config."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, World!"
