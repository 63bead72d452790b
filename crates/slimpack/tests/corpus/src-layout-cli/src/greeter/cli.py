from importlib.metadata import version

from greeter import GREETING


def main():
    print(f"{GREETING} {version('greeter')}")
    return 0
