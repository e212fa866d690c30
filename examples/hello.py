"""The smallest useful microasgi app: `python -m microasgi run examples.hello:app`."""

from microasgi import App, HTMLResponse, Request

app = App()


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(
        "<h1>Hello from microasgi</h1><p>Try <a href='/hello/world'>/hello/world</a>.</p>"
    )


@app.get("/hello/{name}", name="hello")
async def hello(request: Request, name: str) -> dict[str, str]:
    return {"message": f"Hello, {name}!", "url": str(request.url_for("hello", name=name))}


@app.get("/health")
async def health() -> str:
    return "ok"
