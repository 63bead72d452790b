"""A uv workspace's root app: it runs its member's console script."""
import subprocess

subprocess.run(["greet"], check=True)
