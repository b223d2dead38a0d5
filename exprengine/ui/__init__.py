"""`exprengine ui`: a local web page for editing the faces of a photo or a camera still.

`state.Workbench` holds the engines and the open photos (each decoded, its faces found and
meshed once) and makes every edit, morph, age and download through the library's own calls;
`server.create_app` serves the page (`static/`: plain HTML, JavaScript and CSS, nothing fetched
from elsewhere) and its JSON API with FastAPI; `server.serve` runs it with uvicorn on
127.0.0.1 unless told otherwise.
"""
