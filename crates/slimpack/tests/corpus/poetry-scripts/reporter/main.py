import itsdangerous


def run():
    print("report ready, itsdangerous", itsdangerous.__name__)


def admin():
    print("admin")
