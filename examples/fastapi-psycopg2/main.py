# The FastAPI app of seed 003 with psycopg2 built from source (the package
# has no wheels): slimpack compiles it in its builder stage and adds libpq5,
# and only libpq5, to the runtime.
import os

import psycopg2
from fastapi import FastAPI
from sqlalchemy import create_engine, text

app = FastAPI()

DATABASE_URL = os.environ.get("DATABASE_URL")


@app.get("/health")
def health():
    return {"status": "healthy"}


@app.get("/")
def index():
    return {"message": "Hello", "libpq": psycopg2.__libpq_version__}


@app.get("/db")
def db():
    if not DATABASE_URL:
        return {"database": "not configured"}
    with create_engine(DATABASE_URL).connect() as conn:
        return {"database": conn.execute(text("select version()")).scalar()}
