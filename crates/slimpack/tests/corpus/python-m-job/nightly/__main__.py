import sys

print("nightly job on", sys.version.split()[0])
