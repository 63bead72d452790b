"""A bot that posts one message and exits (the kind run as a Cloud Run job)."""
import json, platform

if __name__ == "__main__":
    print(json.dumps({"bot": "ran", "python": platform.python_version()}))
