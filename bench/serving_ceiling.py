"""
The ceiling for a Python HTTP server on this machine (bench/serving-load.mjs):
a bare FastAPI app on uvicorn that answers every POST /invocations with a
constant JSON, without reading the model or the body. Started from the serving
role's venv with the same workers, loop and HTTP parser as the prediction API:

  python serving_ceiling.py PORT WORKERS
"""

import sys

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI()
BODY = b'{"predictions":[0]}'


@app.post("/invocations")
async def invocations() -> Response:
    return Response(BODY, media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(
        "serving_ceiling:app",
        app_dir=sys.path[0],
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
