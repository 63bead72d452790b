from setuptools import setup

setup(
    name="setup-py-app",
    version="0.1.0",
    py_modules=["app"],
    install_requires=["flask>=3", "gunicorn"],
)
