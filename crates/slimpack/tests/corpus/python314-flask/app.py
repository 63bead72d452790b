import sys

from flask import Flask

app = Flask(__name__)


@app.route("/health")
def health():
    return "python %d.%d" % sys.version_info[:2]
