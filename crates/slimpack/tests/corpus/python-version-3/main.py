import sys

print("python", ".".join(map(str, sys.version_info[:2])))
