"""The OpenAI-compatible API (/v1) through the official ``openai`` client, against the running
site and a real worker; and the other way round, ``LLMClient`` pointed at that same /v1."""

from __future__ import annotations

import io
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before sentence-transformers / huggingface_hub load

import hashlib
import html
import re

import httpx
import numpy as np
import openai
import pytest

from learn.playgrounds.serving import CHAT_MODEL, EMBED_MODEL

SKY = [{"role": "user", "content": "Reply with one word: what colour is the sky?"}]
COLOURS = [{"role": "user", "content": "Name three colours."}]
TEXTS = [
    "A cat is sleeping on the windowsill.",
    "The tax code allows deductions for charitable contributions.",
    "東京は日本の首都です。",
    "GPU kernels fuse matmul + softmax to save memory bandwidth.",
]


def new_key(rpm: int = 1_000) -> str:
    from learn import services

    return services.create_api_key("tests", requests_per_minute=rpm)[1]


def client_for(site: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{site}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(site: str, services) -> openai.OpenAI:
    return client_for(site, new_key())


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from learn.lab.llama_gguf import load_tokenizer

    return load_tokenizer()


def test_the_chat_template_matches_the_gguf_jinja_template() -> None:
    import gguf
    import jinja2

    from learn.lab.llama_gguf import chat_text
    from learn.lab.models import smollm2_gguf

    field = gguf.GGUFReader(str(smollm2_gguf())).fields["tokenizer.chat_template"]
    template = jinja2.Template(bytes(field.parts[field.data[0]]).decode())
    turns = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"}],
        [*COLOURS, {"role": "assistant", "content": "Red."}, {"role": "user", "content": "More"}],
    ]
    for messages in turns:
        assert chat_text(messages) == template.render(messages=messages, add_generation_prompt=True)


def test_it_lists_its_two_models(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {CHAT_MODEL, EMBED_MODEL}
    assert client.models.retrieve(EMBED_MODEL).owned_by == "forward-pass"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


def test_embeddings_equal_sentence_transformers_in_both_encodings(client: openai.OpenAI) -> None:
    from sentence_transformers import SentenceTransformer

    from learn.lab.models import minilm_path

    st = SentenceTransformer(str(minilm_path()), device="cpu")
    want = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)  # (n, 384)
    floats = client.embeddings.create(model=EMBED_MODEL, input=TEXTS, encoding_format="float")
    packed = client.embeddings.create(model=EMBED_MODEL, input=TEXTS)  # the client asks base64
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert got.shape == (4, 384) and [d.index for d in floats.data] == [0, 1, 2, 3]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.999, cos
    assert np.array_equal(np.array([d.embedding for d in packed.data], dtype=np.float32), got)
    tokens = sum(len(ids) for ids in st.tokenizer(TEXTS)["input_ids"])
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    one = client.embeddings.create(model=EMBED_MODEL, input=TEXTS[0], encoding_format="float")
    assert np.allclose(one.data[0].embedding, got[0], atol=1e-5)


def test_greedy_chat_streams_the_same_text_it_returns_whole(
    client: openai.OpenAI, smollm2_tokenizer
) -> None:
    from learn.lab.llama_gguf import chat_ids

    whole = client.chat.completions.create(model=CHAT_MODEL, messages=SKY, temperature=0)
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=SKY,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    deltas = [d for d in deltas if d]
    assert len(deltas) > 2  # the answer came piece by piece
    text = whole.choices[0].message.content
    assert text and "".join(deltas) == text
    assert whole.choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage == whole.usage
    usage = whole.usage
    assert usage.prompt_tokens == len(chat_ids(smollm2_tokenizer, SKY))
    assert usage.completion_tokens == len(smollm2_tokenizer.encode(text).ids) + 1  # + <|im_end|>
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert whole.id.startswith("chatcmpl-") and whole.object == "chat.completion"


def test_a_client_that_leaves_mid_stream_cancels_its_run(site: str, services) -> None:
    import json
    import time
    import uuid

    from learn.models import Run

    body = {"model": CHAT_MODEL, "messages": COLOURS, "max_tokens": 512, "stream": True}
    headers = {"Authorization": f"Bearer {new_key()}"}
    with httpx.stream(
        "POST", f"{site}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            chunk = json.loads(line[6:]) if line.startswith("data: {") else {}
            if chunk and chunk["choices"][0]["delta"].get("content"):
                break  # one piece of text arrived while the run goes on: leave
    run_id = uuid.UUID(chunk["id"].removeprefix("chatcmpl-"))
    deadline = time.monotonic() + 20
    while Run.objects.get(pk=run_id).status != Run.Status.CANCELLED:
        assert time.monotonic() < deadline, Run.objects.get(pk=run_id).status
        time.sleep(0.2)
    assert Run.objects.get(pk=run_id).owner.startswith("key:")


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=CHAT_MODEL, messages=COLOURS, temperature=0, max_tokens=5
    )
    assert done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 5 and done.choices[0].message.content


def test_a_prompt_past_the_context_is_refused_with_context_length_exceeded(
    client: openai.OpenAI,
) -> None:
    half = " ".join(f"word{i}" for i in range(700))  # < 8,000 characters, > 1,024 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": half}] * 2, max_tokens=8
        )
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in caught.value.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 513}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 8_001}]}, "messages[0].content"),
        ({"messages": COLOURS * 33}, "messages"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"n": 2}, "n"),
    ],
)
def test_bad_chat_requests_get_400_naming_the_field(
    client: openai.OpenAI, change: dict, param: str
) -> None:
    body = {"model": CHAT_MODEL, "messages": COLOURS, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body=body, cast_to=object)
    assert caught.value.param == param
    assert caught.value.body["type"] == "invalid_request_error"


def test_bad_embedding_requests_get_400_and_unknown_models_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="2000"):
        client.embeddings.create(model=EMBED_MODEL, input=["x" * 2_001])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBED_MODEL, input=["a"] * 65)
    with pytest.raises(openai.BadRequestError, match="not token ids"):
        client.embeddings.create(model=EMBED_MODEL, input=[[1, 2, 3]])
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input=["a"])
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):  # the chat model cannot embed
        client.embeddings.create(model=CHAT_MODEL, input=["a"])


def test_broken_json_and_other_methods_get_openai_errors_not_html(site: str, services) -> None:
    headers = {"Authorization": f"Bearer {new_key()}", "Content-Type": "application/json"}
    with httpx.Client(base_url=f"{site}/v1", headers=headers, timeout=30) as http:
        for response in (
            http.post("/chat/completions", content=b"{not json"),
            http.post("/chat/completions", json=["a list"]),
            http.post("/embeddings", json={"input": ["no model"]}),
        ):
            assert response.status_code == 400
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert http.get("/chat/completions").status_code == 405
        assert http.get("/completions").json()["error"]["code"] == "unknown_url"


def test_a_missing_or_wrong_key_gets_401_and_a_session_is_not_enough(site: str, services) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(site, "fp-not-a-key").models.list()
    assert caught.value.code == "invalid_api_key"
    bare = httpx.post(f"{site}/v1/chat/completions", json={"model": CHAT_MODEL, "messages": SKY})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    user = get_user_model().objects.create_user("signed-in-learner", password="a-long-password")
    browser = Client(HTTP_HOST="127.0.0.1")
    browser.force_login(user)
    assert browser.get("/v1/models").status_code == 401


def test_a_key_past_its_requests_per_minute_gets_429_with_retry_after(site: str, services) -> None:
    slow = client_for(site, new_key(rpm=2))
    slow.models.list()
    slow.models.list()
    with pytest.raises(openai.RateLimitError) as caught:
        slow.models.list()
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60


def test_staff_create_a_key_in_the_admin_see_it_once_and_can_deactivate_it(
    site: str, services
) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from learn.models import ApiKey

    user_model = get_user_model()
    staff = user_model.objects.filter(username="key-admin").first() or (
        user_model.objects.create_superuser("key-admin", "ka@example.com", "a-long-password")
    )
    admin = Client(HTTP_HOST="127.0.0.1")
    admin.force_login(staff)
    added = admin.post(
        "/admin/learn/apikey/add/",
        {"name": "notebook", "user": "", "requests_per_minute": "7"},
        follow=True,
    )
    assert added.status_code == 200
    page = added.content.decode()
    (plaintext,) = set(re.findall(r"fp-[A-Za-z0-9_-]{40,}", page))
    key = ApiKey.objects.get(name="notebook")
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert key.requests_per_minute == 7 and plaintext.startswith(key.prefix)
    change = admin.get(f"/admin/learn/apikey/{key.pk}/change/")
    assert change.status_code == 200 and key.prefix in change.content.decode()
    assert plaintext not in change.content.decode()  # shown once, on the page after adding
    assert key.prefix in admin.get("/admin/learn/apikey/").content.decode()
    assert len(client_for(site, plaintext).models.list().data) == 2
    admin.post("/admin/learn/apikey/", {"action": "deactivate", "_selected_action": [key.pk]})
    with pytest.raises(openai.AuthenticationError):
        client_for(site, plaintext).models.list()


def test_the_management_command_prints_a_working_key(site: str, services) -> None:
    from django.core.management import call_command

    from learn.models import ApiKey

    out = io.StringIO()
    call_command("create_api_key", "ops-script", "--rpm", "5", stdout=out, stderr=io.StringIO())
    plaintext = out.getvalue().strip()
    assert ApiKey.objects.get(name="ops-script").requests_per_minute == 5
    assert len(client_for(site, plaintext).models.list().data) == 2


def test_llm_client_gets_the_same_greedy_text_from_the_sites_v1_as_in_process(
    site: str, services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.llm_client import LLMClient

    monkeypatch.setenv("FP_LLM_BASE_URL", f"{site}/v1")
    monkeypatch.setenv("FP_LLM_API_KEY", new_key())
    monkeypatch.delenv("FP_LLM_MODEL", raising=False)
    remote = LLMClient.from_env()
    assert remote.remote and remote.model == CHAT_MODEL
    pieces: list[str] = []
    far = remote.chat(COLOURS, max_tokens=10, on_delta=pieces.append)
    monkeypatch.delenv("FP_LLM_BASE_URL")
    local = LLMClient.from_env()
    assert not local.remote
    near = local.chat(COLOURS, max_tokens=10)
    assert far.text == near.text == "".join(pieces) and len(pieces) > 2
    assert (far.prompt_tokens, far.completion_tokens) == (near.prompt_tokens, 10)
    assert far.finish_reason == near.finish_reason == "length"
    assert far.device == site.removeprefix("http://") and near.device == "cpu"
    assert 0 < far.first_token_ms <= far.ms


def test_a_v1_run_has_a_readable_run_page(client: openai.OpenAI, site: str) -> None:
    from learn.models import Run

    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=6,
        temperature=0,
    )
    run = Run.objects.filter(playground="chat-completion").order_by("-created_at").first()
    page = httpx.get(f"{site}/runs/{run.id}/", timeout=30)
    assert page.status_code == 200 and "/v1/chat/completions" in page.text
    assert html.escape(answer.choices[0].message.content.split()[0]) in page.text


def test_v1_backends_cannot_be_started_around_the_key(site: str) -> None:
    """The hidden playgrounds behind /v1 are not in the playground API: no key, no run."""
    listed = httpx.get(f"{site}/api/playgrounds", timeout=30).json()
    assert not {"chat-completion", "embeddings"} & {pg["slug"] for pg in listed}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{site}/api/playgrounds/chat-completion/runs", json=body, timeout=30)
    assert response.status_code == 404
