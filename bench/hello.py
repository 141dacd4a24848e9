"""The baseline: a hello-world Flask app, served by the same gunicorn line as the service."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def hello():
    """Answer a tiny JSON object."""
    return jsonify(ok=True, hello="world")
