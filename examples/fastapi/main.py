# The FastAPI app of seed 003: an API with a health check, SQLAlchemy and
# Alembic for PostgreSQL (psycopg2).
import os

from fastapi import FastAPI
from sqlalchemy import create_engine, text

app = FastAPI()

DATABASE_URL = os.environ.get("DATABASE_URL")


@app.get("/health")
def health():
    return {"status": "healthy"}


@app.get("/")
def index():
    return {"message": "Hello"}


@app.get("/db")
def db():
    if not DATABASE_URL:
        return {"database": "not configured"}
    with create_engine(DATABASE_URL).connect() as conn:
        return {"database": conn.execute(text("select version()")).scalar()}
