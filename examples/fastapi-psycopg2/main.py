# Seed 003's app, unchanged (the benchmark runs the same code as the seed's
# Dockerfile). psycopg2 comes from requirements.txt, compiled from source.
from fastapi import FastAPI
app = FastAPI()

@app.get("/health")
def health():
    return {"status": "healthy"}

@app.get("/")
def index():
    return {"message": "Hello"}
