from importlib.metadata import version

print("itsdangerous", version("itsdangerous"))
