from ninja import NinjaAPI

from learn.api import router as learn_router

api = NinjaAPI(
    title="Forward Pass API",
    version="1",
    description="Run the playgrounds from scripts: the same jobs as the forms on the lesson pages.",
    docs_url="/docs",
    urls_namespace="api",
)
api.add_router("", learn_router)
